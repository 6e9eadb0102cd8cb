"""Run NVIDIA AIPerf against ``llmsim serve --latency-model step`` and check what it reports.

AIPerf is not a dependency of llmsim or of its tests: install it in a virtualenv of its own
(``python -m venv /tmp/aiperf && /tmp/aiperf/bin/pip install aiperf``) and name its command
with ``--aiperf``. The script builds a small Hugging Face tokenizer (``tokenizers``, trained
on this repository's docs: nothing is downloaded), starts llmsim with it and
``--enable-prompt-tokens-details``, runs ``aiperf profile`` with shared prefix prompts
(``--num-prefix-prompts``) while AIPerf scrapes ``/metrics``, and then checks AIPerf's
artifacts for what would make its numbers wrong:

- a counter, histogram or bucket reset in AIPerf's log (it drops such series);
- a token-count discrepancy: a request whose ``usage`` differs from AIPerf's own count by
  more than AIPerf's threshold (10 %);
- no prompt-cache read tokens although the prompts share prefixes;
- the server's mean TTFT (AIPerf's scrape of ``vllm:time_to_first_token_seconds``) above
  AIPerf's client TTFT; the difference is printed beside AIPerf's HTTP sending time.

    PYTHONPATH=$PWD python benchmarks/aiperf_check.py --aiperf /tmp/aiperf/bin/aiperf
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import ROOT, Child, child_env, cleanup_on_exit, server_env, start_llmsim

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
USAGE_DIFF_PCT = 10.0
"""AIPerf's default ``AIPERF_METRICS_USAGE_PCT_DIFF_THRESHOLD``."""
RESET_WORDS = ("counter reset", "histogram counter reset", "bucket counter reset")


def build_tokenizer(directory: Path) -> None:
    """A 2,000-token byte-level BPE with a BOS and a chat template, trained on the docs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([p.read_text() for p in (ROOT / "docs").glob("*.md")], trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 8192,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def run_aiperf(args: argparse.Namespace, url: str, tokenizer: Path, out: Path) -> Path:
    """``aiperf profile`` to completion; its console output's path."""
    argv = [
        args.aiperf, "profile", "--model", "llmsim/sim-model", "--url", url,
        "--endpoint-type", "chat", "--streaming", "--tokenizer", str(tokenizer),
        "--concurrency", str(args.concurrency), "--request-count", str(args.requests),
        "--num-prefix-prompts", str(args.prefix_prompts), "--prefix-prompt-length", "200",
        "--synthetic-input-tokens-mean", "100", "--output-tokens-mean", "20",
        "--extra-inputs", "ignore_eos:true", "--ui", "none", "--artifact-dir", str(out),
    ]  # fmt: skip
    env = child_env()
    env.pop("HF_HUB_OFFLINE", None)  # AIPerf's offline mode takes a local path for a hub id
    out.parent.mkdir(parents=True, exist_ok=True)
    console = out.parent / "aiperf-console.txt"
    child = Child("aiperf", argv, console, env=env)
    if child.wait(args.timeout) is None:
        child.stop()
        raise SystemExit(child.failure("did not finish"))
    if child.process.returncode != 0:
        raise SystemExit(child.failure(f"exited with {child.process.returncode}"))
    child.stop()
    return console


def mean(records: list[dict[str, Any]], tag: str) -> float:
    values = [r["metrics"][tag]["value"] for r in records if tag in r["metrics"]]
    return statistics.fmean(values) if values else float("nan")


def check(out: Path, console: Path) -> list[tuple[str, bool, str]]:
    """Each check's name, whether it passed, and the numbers behind it."""
    log = console.read_text(errors="replace") + (out / "logs" / "aiperf.log").read_text()
    resets = [line for line in log.splitlines() if any(w in line for w in RESET_WORDS)]
    records = [json.loads(line) for line in (out / "profile_export.jsonl").open()]
    diffs = [
        r["metrics"][tag]["value"]
        for r in records
        for tag in ("usage_prompt_tokens_diff_pct", "usage_completion_tokens_diff_pct")
        if tag in r["metrics"]
    ]
    discrepant = sum(1 for diff in diffs if diff > USAGE_DIFF_PCT)
    cached = sum(
        r["metrics"]["usage_prompt_cache_read_tokens"]["value"]
        for r in records
        if "usage_prompt_cache_read_tokens" in r["metrics"]
    )
    server_metrics = json.loads((out / "server_metrics_export.json").read_text())["metrics"]
    server = server_metrics["vllm:time_to_first_token_seconds"]["series"][0]["stats"]
    server_ttft = server["avg"] * 1e3
    client_ttft = mean(records, "time_to_first_token")
    sending = mean(records, "http_req_sending")
    return [
        ("no counter or histogram reset", not resets, f"{len(resets)} warnings"),
        ("no token-count discrepancy", discrepant == 0, f"{discrepant} of {len(records)} requests"),
        ("prompt-cache read tokens", cached > 0, f"{cached:,} tokens"),
        (
            "server TTFT <= client TTFT",
            server_ttft <= client_ttft,
            f"server {server_ttft:.2f} ms ({server['count']} requests), client "
            f"{client_ttft:.2f} ms: {client_ttft - server_ttft:.2f} ms apart, "
            f"of which sending {sending:.2f} ms",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiperf", default="aiperf", help="the aiperf command (default: on PATH)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--prefix-prompts", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for AIPerf's run")
    parser.add_argument("--keep", type=Path, help="keep AIPerf's artifacts in this directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir, cleanup_on_exit():
        base = args.keep or Path(workdir)
        tokenizer = Path(workdir) / "tokenizer"
        build_tokenizer(tokenizer)
        server = start_llmsim(
            Path(workdir), "llmsim", "--latency-model", "step", "--inter-token-latency", "5ms",
            "--tokenizer", str(tokenizer), "--enable-prompt-tokens-details",
            "--max-model-len", "4096", env=server_env(plain=False),
        )  # fmt: skip
        console = run_aiperf(args, server.base_url, tokenizer, base / "artifacts")
        server.child.stop()
        results = check(base / "artifacts", console)
    for name, passed, detail in results:
        print(f"{'ok  ' if passed else 'FAIL'}  {name:<32}{detail}")
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
