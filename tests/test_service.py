"""The protocol-neutral request layer, driven without any server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from llmsim.engine import Engine
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.engine.structured import FunctionSpec, OutputConstraint, ToolChoice
from llmsim.engine.tokenizer import BuiltinTokenizer
from llmsim.observability.metrics import Metrics
from llmsim.runtime.adjustable import Runtime
from llmsim.runtime.lifecycle import Lifecycle
from llmsim.service.constraints import (
    Constraint,
    ToolUse,
    answer_for,
    constrained,
    output_constraint,
)
from llmsim.service.errors import ErrorKind, ServiceError
from llmsim.service.generation import (
    ServiceState,
    TokenRequest,
    output_ids,
    pick_engine,
    start,
)
from llmsim.service.kv_transfer import KVTransferAgent
from llmsim.service.prompts import text_prompt, token_prompt
from llmsim.service.sampling import (
    Sampling,
    check_logprobs_limit,
    check_sampling,
    generation_request,
)
from llmsim.settings.model import Settings

TOKENIZER = BuiltinTokenizer()


def state(startup: float = 0.0, **fields: Any) -> ServiceState:
    settings = Settings.model_validate({"seed": 1, **fields})
    metrics = Metrics(settings)
    engine = Engine(settings, observer=metrics)
    return ServiceState(engine, Lifecycle(startup), Runtime(settings, engine, metrics))


def refusal(error: pytest.ExceptionInfo[ServiceError]) -> tuple[ErrorKind, str | None]:
    return error.value.kind, error.value.param


def test_token_prompts_are_taken_as_given_and_truncated_from_the_left() -> None:
    prompt = token_prompt([5, 6, 7, 8], TOKENIZER, True, truncate=2)
    assert (prompt.token_count, list(prompt.token_ids or ())) == (2, [7, 8])
    assert token_prompt([5, 6, 7], TOKENIZER, False, truncate=-1, max_model_len=2).token_count == 2
    assert token_prompt([5, 6, 7], TOKENIZER, False).token_ids is None
    with pytest.raises(ServiceError) as caught:
        token_prompt([1], TOKENIZER, False, truncate=0)
    assert refusal(caught) == (ErrorKind.INVALID, "truncate_prompt_tokens")
    with pytest.raises(ServiceError) as caught:
        token_prompt([TOKENIZER.max_token_id + 1], TOKENIZER, False)
    assert "out of vocabulary" in caught.value.message


def test_text_prompts_are_counted_with_the_servers_tokenizer() -> None:
    text = "Hello there, how are you?"
    assert text_prompt(text, TOKENIZER, False).token_count == TOKENIZER.count(text, True)
    with_ids = text_prompt(text, TOKENIZER, True)
    assert list(with_ids.token_ids or ()) == TOKENIZER.encode(text, True)


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        (Sampling(n=3), "n"),
        (Sampling(max_tokens=0), "max_tokens"),
        (Sampling(max_tokens=2, min_tokens=3), "min_tokens"),
        (Sampling(logprobs=21), "logprobs"),
        (Sampling(prompt_logprobs=-1), "prompt_logprobs"),
        (Sampling(logprobs=-2), "logprobs"),
        (Sampling(logit_bias={-5: 1.0}), "logit_bias"),
    ],
)
def test_sampling_limits_refuse_as_vllm_does(sampling: Sampling, param: str) -> None:
    with pytest.raises(ServiceError) as caught:
        check_sampling(sampling, TOKENIZER, max_logprobs=20, max_sequences=2)
    assert refusal(caught) == (ErrorKind.INVALID, param)


def test_sampling_within_limits_passes() -> None:
    fine = Sampling(n=2, max_tokens=5, min_tokens=5, logprobs=20, logit_bias={3: 100.0})
    check_sampling(fine, TOKENIZER, max_logprobs=20, max_sequences=2)


def test_constraints_become_engine_constraints_or_refusals() -> None:
    assert output_constraint(Constraint("json_object")).kind == "json_object"
    assert output_constraint(Constraint("choice", ("a", "b"))).choices == ("a", "b")
    assert output_constraint(Constraint("json_schema", '{"type": "object"}')).kind == "json"
    for kind in ("grammar", "structural_tag"):
        with pytest.raises(ServiceError, match=f"{kind} constraints are not supported"):
            output_constraint(Constraint(kind, "x"))
    for text in ("{", "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ServiceError, match="not a valid JSON schema"):
            output_constraint(Constraint("json_schema", text))
    answer = constrained(Constraint("choice", ("yes", "no")), seed=4)
    assert answer is not None
    assert answer.text in {"yes", "no"}
    assert constrained(None, seed=4) is None


async def test_start_submits_and_the_engine_answers_token_ids() -> None:
    service = state()
    request = TokenRequest(
        "r1", token_ids=[1000, 1001], sampling=Sampling(max_tokens=4, ignore_eos=True)
    )
    with await start(service, request) as group:
        await group.run()
    [sequence] = group.sequences
    assert (group.prompt_tokens, sequence.generated, sequence.finish_reason) == (2, 4, "length")
    assert len(output_ids(sequence, service.engine.tokenizer)) == 4


async def test_start_refuses_while_loading_when_full_and_beyond_the_context() -> None:
    with pytest.raises(ServiceError) as caught:
        await start(state(startup=60.0), TokenRequest("r", text="hi"))
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    full = state(max_running_requests=1, max_waiting_queue_length=0)
    with await start(full, TokenRequest("a", text="hi")):
        with pytest.raises(ServiceError) as caught:
            await start(full, TokenRequest("b", text="hi"))
        assert (caught.value.kind, caught.value.status) == (ErrorKind.OVERLOADED, 429)
    small = state(max_model_len=8)
    with pytest.raises(ServiceError) as caught:
        await start(small, TokenRequest("c", token_ids=list(range(1, 20))))
    assert refusal(caught) == (ErrorKind.INVALID, "prompt")


async def test_requests_are_balanced_or_sent_to_the_rank_asked_for() -> None:
    settings = Settings.model_validate({"seed": 1})
    metrics = Metrics(settings)
    engines = [Engine(settings, observer=metrics) for _ in range(2)]
    group_of = DataParallelEngines(engines, (0, 1))
    service = ServiceState(
        engines[0], Lifecycle(0.0), Runtime(settings, group_of, metrics), group_of
    )
    assert pick_engine(service, 1) is engines[1]
    with pytest.raises(ServiceError, match=r"out of range \[0, 2\)"):
        pick_engine(service, 2)
    first = await start(service, TokenRequest("a", text="hi"))
    second = await start(service, TokenRequest("b", text="hi"))
    assert {first.engine, second.engine} == set(engines)  # the idle engine takes the next
    assert service.busy == 2
    first.abort()
    second.abort()
    assert service.busy == 0


async def test_injected_faults_keep_their_http_status() -> None:
    service = state()
    with pytest.raises(ServiceError) as caught:
        await start(service, TokenRequest("r", text="hi", forced_fault="503"))
    assert (caught.value.kind, caught.value.status) == (ErrorKind.FAULT, 503)
    with pytest.raises(ServiceError) as caught:
        await start(service, TokenRequest("r", text="hi", forced_fault="nope"))
    assert caught.value.kind is ErrorKind.INVALID


def test_http_may_count_an_empty_text_prompt_grpc_may_not() -> None:
    empty = text_prompt("", TOKENIZER, True, allow_empty=True)
    assert (empty.token_count, empty.echo_text) == (len(TOKENIZER.encode("", True)), "")
    with pytest.raises(ServiceError) as caught:
        text_prompt("", TOKENIZER, False)
    assert refusal(caught) == (ErrorKind.INVALID, "prompt")


def test_the_logprobs_bound_names_its_parameter_with_or_without_the_value() -> None:
    check_logprobs_limit(5, 5)
    with pytest.raises(ServiceError) as caught:
        check_logprobs_limit(6, 5, "prompt")
    assert refusal(caught) == (ErrorKind.INVALID, "prompt_logprobs")
    assert caught.value.message.endswith("max allowed: 5 (parameter=prompt_logprobs, value=6)")
    with pytest.raises(ServiceError) as caught:
        check_logprobs_limit(6, 5, detail=False)
    assert caught.value.message.endswith("max allowed: 5")


def test_tool_and_schema_refusals_name_the_field_at_fault() -> None:
    rng = random.Random(1)
    tools = ToolUse([FunctionSpec("f", {})], ToolChoice("named", "g"), True, "user", 1.0)
    with pytest.raises(ServiceError) as caught:
        answer_for(None, "response_format", rng, tools)
    assert refusal(caught) == (ErrorKind.INVALID, "tool_choice")
    bad = OutputConstraint("json", schema={"type": "number", "multipleOf": 0})
    with pytest.raises(ServiceError) as caught:
        answer_for(bad, "structured_outputs.json", rng)
    assert refusal(caught) == (ErrorKind.INVALID, "structured_outputs.json")
    assert caught.value.message.startswith("structured_outputs.json: ")
    called = ToolUse([FunctionSpec("f", {})], ToolChoice("required"), False, "user", 1.0)
    answer = answer_for(None, "tools", rng, called)
    assert answer is not None
    assert [call.name for call in answer.tool_calls] == ["f"]


async def test_a_prefill_answer_names_its_blocks_only_when_cut_on_its_length() -> None:
    service = state()
    agent = KVTransferAgent(service.engine.settings)
    prefill = agent.read({"do_remote_decode": True})
    assert agent.decode_delay(prefill, service.engine.settings, 10) is None
    request = TokenRequest("p", text="hi there", sampling=Sampling(max_tokens=1, ignore_eos=True))
    with await start(service, request) as group:
        await group.run()
    params = agent.answer_params(prefill, group, "p")
    assert params is not None
    assert params["remote_request_id"] == "p"
    assert agent.answer_params(None, group, "p") is None
    decode = agent.read({**params, "do_remote_decode": False})
    assert agent.decode_delay(decode, service.engine.settings, 10) is not None


def test_generation_request_carries_the_sampling_parameters() -> None:
    target = state().engine.resolve(None)
    sampling = Sampling(max_tokens=9, n=2, stop=("x",), ignore_eos=True, seed=3)
    request = generation_request("r", target, [text_prompt("hi", TOKENIZER, False)], sampling, 4)
    assert (request.n, request.max_tokens, request.stop, request.ignore_eos, request.seed) == (
        2,
        4,
        ("x",),
        True,
        3,
    )
