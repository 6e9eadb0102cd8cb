"""vLLM's gRPC API beside HTTP: a client built from the .proto drives ``llmsim serve --grpc-port``."""

from __future__ import annotations

import http.client
import importlib
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402

from tests.conftest import (  # noqa: E402
    RunningServer,
    free_port,
    free_port_run,
    post_json,
    run_cli,
    start_server,
    stop_process,
)

KEY = "grpc-secret"
AUTH = (("authorization", f"Bearer {KEY}"),)
ROOT = Path(__file__).resolve().parent.parent


def serve(tmp_path: Path, *args: str) -> tuple[RunningServer, int]:
    grpc_port = free_port()
    server = start_server(["--grpc-port", str(grpc_port), *args], tmp_path)
    return server, grpc_port


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, int]]:
    """No latency, an API key, the step model's prefix cache, two engines behind one port."""
    server, port = serve(
        tmp_path_factory.mktemp("grpc"),
        "--api-key", KEY, "--latency-model", "step", "--seed", "3", "-dp", "2",
    )  # fmt: skip
    yield server, port
    server.stop()


LOCAL = [("grpc.use_local_subchannel_pool", 1)]
"""A channel of its own: one refused connection must not hold back the next channel."""


def channel_to(port: int) -> Any:
    return grpc.insecure_channel(f"127.0.0.1:{port}", LOCAL)


def stub_for(port: int, grpc_module: ModuleType) -> Any:
    return grpc_module.VllmEngineStub(channel_to(port))


def gauge(server: RunningServer, name: str) -> float:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^vllm:{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def wait_gauge(server: RunningServer, name: str, value: float) -> None:
    deadline = time.monotonic() + 10
    while gauge(server, name) != value:
        assert time.monotonic() < deadline, (name, gauge(server, name))
        time.sleep(0.02)


def test_every_rpc_answers(keyed: tuple[RunningServer, int], proto: Any) -> None:
    _server, port = keyed
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=AUTH)
    assert info.is_generation
    assert info.max_context_length > 0
    assert info.vocab_size > 0
    state = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=AUTH)
    assert state.server_type == "vllm-grpc"
    assert not state.is_paused
    assert stub.HealthCheck(pb.HealthCheckRequest()).healthy
    embedded = stub.Embed(
        pb.EmbedRequest(tokenized=pb.TokenizedInput(input_ids=[5, 6, 7])), metadata=AUTH
    )
    assert embedded.prompt_tokens == 3
    assert embedded.embedding_dim == len(embedded.embedding) > 0

    params = pb.SamplingParams(max_tokens=5, ignore_eos=True)
    ids = list(range(100, 140))
    request = pb.GenerateRequest(tokenized=pb.TokenizedInput(input_ids=ids), sampling_params=params)
    rank1 = (*AUTH, ("x-data-parallel-rank", "1"))
    [answer] = list(stub.Generate(request, metadata=rank1))
    done = answer.complete
    assert (done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("length", 40, 5)
    assert len(done.output_ids) == 5
    [again] = list(stub.Generate(request, metadata=rank1))
    assert again.complete.cached_tokens == 32  # two 16-token blocks from rank 1's prefix cache
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(request, metadata=(*AUTH, ("x-data-parallel-rank", "2"))))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    streamed = list(
        stub.Generate(
            pb.GenerateRequest(text="Hello there", sampling_params=params, stream=True),
            metadata=AUTH,
        )
    )
    chunks, last = streamed[:-1], streamed[-1]
    assert chunks
    assert all(item.WhichOneof("response") == "chunk" for item in chunks)
    assert [i for item in chunks for i in item.chunk.token_ids] == list(last.complete.output_ids)
    assert chunks[-1].chunk.completion_tokens == last.complete.completion_tokens == 5
    assert last.complete.prompt_tokens > 0


def test_constraints_and_refusals(keyed: tuple[RunningServer, int], proto: Any) -> None:
    _server, port = keyed
    pb, pb_grpc = proto
    stub = stub_for(port, pb_grpc)
    choice = pb.SamplingParams(choice=pb.ChoiceConstraint(choices=["yes"]), seed=1)
    [answer] = list(
        stub.Generate(pb.GenerateRequest(text="ok?", sampling_params=choice), metadata=AUTH)
    )
    assert answer.complete.finish_reason == "stop"
    assert answer.complete.output_ids
    refusals = [
        pb.SamplingParams(grammar="root ::= 'a'"),
        pb.SamplingParams(structural_tag="{}"),
        pb.SamplingParams(max_tokens=2, min_tokens=3),
        pb.SamplingParams(logprobs=10_000),
        pb.SamplingParams(truncate_prompt_tokens=-2),
    ]
    for params in refusals:
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(text="x", sampling_params=params), metadata=AUTH))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, params
    assert "grammar constraints are not supported" in _refusal(stub, pb, refusals[0])
    for status, code in (("503", "UNAVAILABLE"), ("429", "RESOURCE_EXHAUSTED")):
        forced = (*AUTH, ("x-return-error", status))
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(text="x"), metadata=forced))
        assert caught.value.code() == getattr(grpc.StatusCode, code)
    huge = pb.GenerateRequest(text="x" * (5 * 1024 * 1024))  # beyond the 4 MiB body limit
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(huge, metadata=AUTH))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    two = pb.SamplingParams(n=2, max_tokens=3, ignore_eos=True)
    answers = list(stub.Generate(pb.GenerateRequest(text="x", sampling_params=two), metadata=AUTH))
    assert [answer.complete.completion_tokens for answer in answers] == [3, 3]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Generate(pb.GenerateRequest(text="x")))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.HealthCheck(pb.HealthCheckRequest()).healthy  # probes need no key


def _refusal(stub: Any, pb: Any, params: Any) -> str:
    try:
        list(stub.Generate(pb.GenerateRequest(text="x", sampling_params=params), metadata=AUTH))
    except grpc.RpcError as exc:
        return str(exc.details())
    raise AssertionError("not refused")


def test_health_service_and_reflection(keyed: tuple[RunningServer, int]) -> None:
    server, port = keyed
    assert f"grpc  127.0.0.1:{port}  (vllm.grpc.engine.VllmEngine" in server.log()  # banner
    channel = channel_to(port)
    checked = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    [reply] = list(
        reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    )
    names = {service.name for service in reply.list_services_response.service}
    assert {"vllm.grpc.engine.VllmEngine", "grpc.health.v1.Health"} <= names


def test_cancel_abort_queue_and_shared_limits(tmp_path: Path, proto: Any) -> None:
    """One running slot and one waiting place shared by HTTP and gRPC; cancel and Abort free them."""
    pb, pb_grpc = proto
    server, port = serve(
        tmp_path,
        "--max-running-requests", "1", "--max-waiting-queue-length", "1",
        "--time-to-first-token", "0", "--inter-token-latency", "40ms",
    )  # fmt: skip
    try:
        stub = stub_for(port, pb_grpc)
        ids = pb.TokenizedInput(input_ids=[5, 6, 7])
        vector = list(stub.Embed(pb.EmbedRequest(tokenized=ids)).embedding)
        status, body = post_json(server, "/v1/embeddings", {"input": [5, 6, 7]})
        assert status == 200
        assert vector == pytest.approx(body["data"][0]["embedding"], rel=1e-6, abs=1e-7)
        long = pb.SamplingParams(max_tokens=200, ignore_eos=True)
        call = stub.Generate(pb.GenerateRequest(text="hi", sampling_params=long, stream=True))
        assert next(call).chunk.token_ids
        call.cancel()
        wait_gauge(server, "num_requests_running", 0)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(text="hi", sampling_params=long), timeout=0.3))
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_gauge(server, "num_requests_running", 0)

        held = pb.GenerateRequest(request_id="held", text="hi", sampling_params=long, stream=True)
        holder = stub.Generate(held)
        assert next(holder).chunk.token_ids  # gRPC holds the one running slot
        answers: list[Any] = []
        body = {"prompt": "x", "max_tokens": 2}
        waiter = threading.Thread(
            target=lambda: answers.append(post_json(server, "/v1/completions", body))
        )
        waiter.start()
        wait_gauge(server, "num_requests_waiting", 1)  # HTTP waits behind it
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(text="x", sampling_params=long)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.active_requests == 2
        stub.Abort(pb.AbortRequest(request_ids=["held"]))
        rest = list(holder)
        assert rest[-1].complete.finish_reason == "abort"
        assert 0 < rest[-1].complete.completion_tokens < 200
        waiter.join(10)
        assert answers
        assert answers[0][0] == 200
        wait_gauge(server, "num_requests_running", 0)
        with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        finished = re.findall(
            r'^vllm:request_success_total\{[^}]*finished_reason="(\w+)"[^}]*\} (\S+)$', text, re.M
        )
        counts = {reason: float(value) for reason, value in finished}
        assert counts.get("abort", 0) >= 2, counts
        assert counts.get("length", 0) >= 1, counts
    finally:
        server.stop()


def _health(port: int) -> Any:
    """The standard health service's status; None while nothing listens yet."""
    try:
        return (
            health_pb2_grpc.HealthStub(channel_to(port))
            .Check(health_pb2.HealthCheckRequest())
            .status
        )
    except grpc.RpcError:
        return None


def post_empty(server: RunningServer, path: str) -> int:
    request = urllib.request.Request(server.base_url + path, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def wait_health(port: int, status: Any) -> None:
    deadline = time.monotonic() + 10
    while _health(port) != status:
        assert time.monotonic() < deadline, (port, status)
        time.sleep(0.02)


def test_ranks_lifecycle_sleep_and_drain(tmp_path: Path, proto: Any) -> None:
    """With --dp-ports each rank's server has its gRPC port (grpc-port + index) and lifecycle."""
    pb, pb_grpc = proto
    port = free_port_run(2)
    server = start_server(
        [
            "--grpc-port", str(port), "-dp", "2", "--dp-ports", "--startup-duration", "1500ms",
            "--enable-sleep-mode", "--inter-token-latency", "20ms",
        ],
        tmp_path,
        env={"VLLM_SERVER_DEV_MODE": "1"},
    )  # fmt: skip
    try:
        wait_health(port, health_pb2.HealthCheckResponse.NOT_SERVING)  # listening, loading
        assert f"grpc 127.0.0.1:{port + 1}" in server.log()  # the instances' banner
        first, second = stub_for(port, pb_grpc), stub_for(port + 1, pb_grpc)
        request = pb.GenerateRequest(
            text="hi", sampling_params=pb.SamplingParams(max_tokens=40, ignore_eos=True)
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(first.Generate(request))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "loading" in caught.value.details()
        assert not first.HealthCheck(pb.HealthCheckRequest()).healthy
        wait_health(port + 1, health_pb2.HealthCheckResponse.SERVING)
        assert list(second.Generate(request))[-1].complete.completion_tokens == 40

        assert post_empty(server, "/sleep?level=1") == 200
        assert first.GetServerInfo(pb.GetServerInfoRequest()).is_paused
        assert not second.GetServerInfo(pb.GetServerInfoRequest()).is_paused
        assert post_empty(server, "/wake_up") == 200

        streaming = pb.GenerateRequest(
            text="hi", sampling_params=request.sampling_params, stream=True
        )
        call = first.Generate(streaming)
        assert next(call).chunk.token_ids
        server.process.send_signal(signal.SIGTERM)
        wait_health(port, health_pb2.HealthCheckResponse.NOT_SERVING)
        with pytest.raises(grpc.RpcError) as caught:
            list(first.Generate(request))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert list(call)[-1].complete.finish_reason == "length"  # in flight: it finishes
        assert server.process.wait(15) == 0
    finally:
        server.stop()


HIDE_GRPC = """
import sys


class HideGrpc:
    \"\"\"Imports of grpc fail as if the package were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name == "grpc" or name.startswith("grpc."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideGrpc())
"""


def test_grpc_port_without_the_extra(tmp_path: Path) -> None:
    """Without grpc (hidden by a sitecustomize), --grpc-port stops with one line, status 2."""
    (tmp_path / "sitecustomize.py").write_text(HIDE_GRPC)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    result = run_cli("serve", "--grpc-port", "0", "--port", "0", env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "pip install 'llmsim[grpc]'" in lines[0]


def test_grpc_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", "0", "--grpc-port", str(port))
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: cannot listen for gRPC on 127.0.0.1:{port}: address already in use"
    )


def test_tls_and_client_certificates(tmp_path: Path, proto: Any) -> None:
    """The gRPC port serves the HTTP server's certificate; --ssl-cert-reqs 2 needs a client's."""
    trustme = pytest.importorskip("trustme")
    pb, pb_grpc = proto
    ca = trustme.CA()
    leaf, client = ca.issue_cert("127.0.0.1", "localhost"), ca.issue_cert("client")
    files = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca")}
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    grpc_port = free_port()
    args = [
        sys.executable, "-m", "llmsim", "serve", "--port", str(free_port()),
        "--grpc-port", str(grpc_port), "--ssl-certfile", str(files["cert"]),
        "--ssl-keyfile", str(files["key"]), "--ssl-ca-certs", str(files["ca"]),
        "--ssl-cert-reqs", "2",
    ]  # fmt: skip
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        root = ca.cert_pem.bytes()
        trusted = grpc.ssl_channel_credentials(
            root, client.private_key_pem.bytes(), client.cert_chain_pems[0].bytes()
        )
        channel = grpc.secure_channel(f"127.0.0.1:{grpc_port}", trusted, LOCAL)
        stub = pb_grpc.VllmEngineStub(channel)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert stub.HealthCheck(pb.HealthCheckRequest(), timeout=1).healthy
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                time.sleep(0.1)
        anonymous = grpc.secure_channel(
            f"127.0.0.1:{grpc_port}", grpc.ssl_channel_credentials(root), LOCAL
        )
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.VllmEngineStub(anonymous).HealthCheck(pb.HealthCheckRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_process(process)


class EarlyWake:
    """A lifecycle whose first look says a hair is left though the sleep will be over."""

    def __init__(self) -> None:
        self.looks = [0.001, 0.0]
        self.phase = "loading"

    @property
    def seconds_to_ready(self) -> float:
        left = self.looks.pop(0)
        if left == 0:
            self.phase = "ready"
        return left


async def test_health_turns_serving_even_when_the_clock_wakes_early() -> None:
    from grpc_health.v1 import health

    from llmsim.api.grpc.health import follow_lifecycle

    servicer = health.aio.HealthServicer()
    await follow_lifecycle(servicer, EarlyWake(), "svc")  # type: ignore[arg-type]
    for name in ("", "svc"):
        reply = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_fleet_gives_each_server_its_own_grpc_port(tmp_path: Path) -> None:
    from llmsim.pool.fleet import FleetError, load_fleet

    path = tmp_path / "fleet.toml"
    path.write_text(
        "base_port = 9100\n[defaults]\ngrpc_port = 9200\n"
        '[[instance]]\nname = "a"\n[[instance]]\nname = "b"\n'
        '[[instance]]\nname = "c"\ngrpc_port = 9100\n'
    )
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    assert caught.value.lines == [
        f"{path}: grpc_port: 9200 named by more than one instance (give each instance its own, or 0)",
        f"{path}: grpc_port: 9100 is also an instance's HTTP port",
    ]
    path.write_text(
        "base_port = 9100\n"
        '[[instance]]\nname = "a"\ngrpc_port = 9200\n'
        '[[instance]]\nname = "b"\ngrpc_port = 9201\ndata_parallel_size = 2\n'
    )
    plan = load_fleet(path)
    assert [i.settings.grpc_port for i in plan.instances] == [9200, 9201]


def test_generated_modules_are_current(tmp_path: Path) -> None:
    """The committed modules are what the committed .proto gives (with the grpcio-tools
    release that wrote them: another release writes its own version into them)."""
    committed = ROOT / "llmsim/api/grpc/generated"
    written_by = re.search(
        r"GRPC_GENERATED_VERSION = '([^']+)'", (committed / "vllm_engine_pb2_grpc.py").read_text()
    )
    assert written_by
    installed = importlib.metadata.version("grpcio-tools")
    if installed != written_by.group(1):
        pytest.skip(
            f"the modules were written by grpcio-tools {written_by.group(1)}, not {installed}"
        )
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        generator = importlib.import_module("gen_grpc_stubs")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    fresh = generator.generate(tmp_path)
    for name in generator.GENERATED:
        assert (fresh / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run python scripts/gen_grpc_stubs.py"
        )


def test_grpc_instead_of_http(tmp_path: Path, proto: Any) -> None:
    """``vllm serve M --grpc --port P``: gRPC on P, no HTTP, a clean stop on SIGTERM; the
    stream interval groups its streamed chunks too."""
    pb, pb_grpc = proto
    port = free_port()
    log_path = tmp_path / "grpc-only.log"
    command = [
        sys.executable, "-m", "llmsim", "serve", "acme/tiny", "--grpc",
        "--host", "127.0.0.1", "--port", str(port), "--stream-interval", "3",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_health(port, health_pb2.HealthCheckResponse.SERVING)
        request = pb.GenerateRequest(
            text="hi", sampling_params=pb.SamplingParams(max_tokens=4, ignore_eos=True)
        )
        [answer] = list(stub_for(port, pb_grpc).Generate(request))
        assert answer.complete.completion_tokens == 4
        eight = pb.SamplingParams(max_tokens=8, ignore_eos=True)
        streamed = stub_for(port, pb_grpc).Generate(
            pb.GenerateRequest(text="hi", sampling_params=eight, stream=True)
        )
        sizes = [len(item.chunk.token_ids) for item in streamed if item.HasField("chunk")]
        assert sizes == [1, 3, 3, 1]  # --stream-interval 3: [0] [1-3] [4-6] [7]
        with pytest.raises((OSError, http.client.HTTPException)):  # HTTP/2 frames answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
        # The image's health check asks gRPC's health service of such a server.
        check = [sys.executable, str(ROOT / "deploy" / "container" / "healthcheck.py")]
        env = {**os.environ, "LLMSIM_PORT": str(port)}
        assert subprocess.run(check, env=env, timeout=30).returncode == 1  # asks HTTP
        env["LLMSIM_GRPC_ONLY"] = "1"
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
    finally:
        code = stop_process(process)
    log = log_path.read_text()
    assert code == 0, log
    assert f"grpc  127.0.0.1:{port}" in log
    assert "no HTTP" in log
    assert f"grpcurl -plaintext 127.0.0.1:{port} grpc.health.v1.Health/Check" in log


def test_grpc_and_grpc_port_are_exclusive() -> None:
    result = run_cli("serve", "--grpc", "--grpc-port", "0", "--port", "0")
    assert result.returncode == 2
    assert "--grpc and --grpc-port are mutually exclusive" in result.stderr
