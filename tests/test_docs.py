"""The documentation stays in step with the code.

Fails when a setting, a ``serve`` option or a metric is missing from the docs, when the docs
name a metric the server does not expose, when the README loses its two commands, when the
example profile stops loading, or when the OpenAI SDK example stops working against a server.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest
import typer.main
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from llmsim.api import create_app
from llmsim.cli.main import app
from llmsim.engine import Engine
from llmsim.observability.metrics import Metrics
from llmsim.observability.vllm_series import (
    ITERATION_TOKEN_BUCKETS,
    N_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    SERIES,
    TOKEN_GAP_BUCKETS,
    TTFT_BUCKETS,
)
from llmsim.runtime.sleep import SleepController
from llmsim.settings.model import Settings, env_name, option_flag
from llmsim.settings.sources import display_value, load_settings, read_profile

if TYPE_CHECKING:
    from conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIGURATION = DOCS / "configuration.md"
METRICS = DOCS / "metrics.md"
PROFILE = ROOT / "examples" / "profile.toml"
CLIENT = ROOT / "examples" / "openai_client.py"
GENERATOR = DOCS / "gen_config_reference.py"
LOAD_TEST = ROOT / "examples" / "load_test.py"
LORA_ROUTER = ROOT / "examples" / "lora_router_state.py"

INSTALL_AND_RUN = "python3 -m pip install . && llmsim serve"
RUN_TESTS = "python3 -m pip install nox && nox"

# A letter after the colon: ``llmsim:0.1.0`` is an image tag, not a metric.
METRIC_NAME = re.compile(r"(?<![\w:])(?:vllm|llmsim):[a-z_][a-z0-9_]*")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
ENV_VAR = re.compile(r"\b(?:LLMSIM|VLLM)_[A-Z0-9_]+\b")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _doc_pages() -> list[Path]:
    """Every Markdown page of the documentation, recipes included."""
    return sorted(DOCS.rglob("*.md"))


def _mentions(text: str, word: str) -> bool:
    """``word`` appears as a whole token (not as part of a longer name)."""
    return re.search(rf"(?<![\w:-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment; make sure the caller's does not leak in."""
    for name in list(os.environ):
        if name.startswith(("LLMSIM_", "VLLM_")) or name == "API_KEY":
            monkeypatch.delenv(name)


# -- configuration ------------------------------------------------------------------


def _setting_sections() -> dict[str, str]:
    """``#### `name``` sections of docs/configuration.md, by setting name."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in _text(CONFIGURATION).splitlines():
        heading = re.match(r"^#{2,4} `([a-z0-9_]+)`\s*$", line)
        if heading:
            current = heading.group(1)
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_has_a_section_with_flag_env_key_and_default(field: str) -> None:
    sections = _setting_sections()
    assert field in sections, f"docs/configuration.md has no '#### `{field}`' section"
    section = sections[field]
    for form in (option_flag(field), env_name(field), f"`{field}`"):
        assert form in section, f"section `{field}` does not mention {form}"
    default = display_value(field, getattr(Settings(), field))
    if default != "-":
        assert f"`{default}`" in section, f"section `{field}` does not give the default {default}"


def test_every_setting_is_in_the_reference_table() -> None:
    text = _text(CONFIGURATION)
    for field in Settings.model_fields:
        assert f"| [`{field}`](#{field}) |" in text, f"{field} missing from the reference table"


def _generator() -> ModuleType:
    """docs/gen_config_reference.py, imported as a module."""
    return _example_module(GENERATOR)


def test_generated_reference_is_up_to_date() -> None:
    generator = _generator()
    text = _text(CONFIGURATION)
    assert generator.BEGIN in text
    assert generator.END in text
    regenerated = generator.replace_region(text, generator.render_reference())
    assert regenerated == text, (
        "the generated reference in docs/configuration.md is out of date; "
        "regenerate it with: python docs/gen_config_reference.py"
    )


def test_generated_reference_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator()
    before = generator.render_reference()
    monkeypatch.setenv("LLMSIM_PORT", "9999")
    monkeypatch.setenv("LLMSIM_MAX_LORAS", "3")
    assert generator.render_reference() == before


@pytest.mark.parametrize(
    ("field", "accepted"),
    [
        ("port", "an integer from 0 to 65535"),
        ("kv_cache_size", "an integer from 1 to 1000000000"),
        ("time_factor_under_load", "a number from 1 to 100"),
        ("mode", "`echo`, `random`"),
        ("time_to_first_token", "a [duration](#durations), not negative, at most 3600s"),
        ("prefill_time_per_token", "a [duration](#durations), not negative, at most 1s"),
        ("max_request_body_size", "a [size](#sizes) from 1KiB to 1GiB"),
        ("seed", "an integer"),
        ("model", "text, not empty"),
    ],
)
def test_generator_describes_types_choices_and_bounds(field: str, accepted: str) -> None:
    assert _generator().accepted_text(field) == accepted


def test_generator_takes_flags_and_aliases_from_the_serve_command() -> None:
    generator = _generator()
    options = generator.serve_options()
    assert options["max_running_requests"].flags == ("--max-running-requests", "--max-num-seqs")
    assert options["inter_token_latency"].panel == "Latency"
    assert generator.environment_text("api_key") == "`LLMSIM_API_KEY` or `VLLM_API_KEY`"
    assert generator.toml_text("config") == "none (`config` is not allowed in a file)"


def test_generator_check_fails_on_a_stale_region_and_the_command_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = _generator()
    stale = tmp_path / "configuration.md"
    stale.write_text(_text(CONFIGURATION).replace("| `--port` |", "| `--prot` |"), encoding="utf-8")
    monkeypatch.setattr(generator, "CONFIGURATION", stale)
    assert generator.main(["--check"]) == 1
    assert "python docs/gen_config_reference.py" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert stale.read_text(encoding="utf-8") == _text(CONFIGURATION)
    assert generator.main(["--check"]) == 0


def _serve_options_from_click() -> set[str]:
    command = typer.main.get_command(app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    options: set[str] = set()
    for param in serve.params:
        options.update(opt for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--"))
    return options


def _serve_help() -> str:
    result = CliRunner().invoke(
        app,
        ["serve", "--help"],
        env={"COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"},
        terminal_width=250,
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_every_serve_option_is_documented() -> None:
    help_text = _serve_help()
    options = (_serve_options_from_click() | set(OPTION.findall(help_text))) - {"--help"}
    assert "--max-num-seqs" in options
    docs = _text(CONFIGURATION)
    missing = sorted(option for option in options if not _mentions(docs, option))
    assert not missing, f"options of `llmsim serve` missing from docs/configuration.md: {missing}"


def test_every_environment_variable_in_help_is_documented() -> None:
    docs = _text(CONFIGURATION)
    variables = set(ENV_VAR.findall(_serve_help()))
    assert "LLMSIM_PORT" in variables
    missing = sorted(variable for variable in variables if not _mentions(docs, variable))
    assert not missing, f"environment variables missing from docs/configuration.md: {missing}"


@pytest.mark.usefixtures("clean_env")
def test_example_profile_loads_and_every_key_comes_from_the_file() -> None:
    keys = read_profile(PROFILE)
    loaded = load_settings({"config": str(PROFILE)})
    assert keys, "examples/profile.toml sets nothing"
    for key in keys:
        assert loaded.sources[key] == "file", key
    assert loaded.settings.adapters, "the example profile should show adapters"


# -- endpoints ----------------------------------------------------------------------

ENDPOINT = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


@pytest.mark.usefixtures("clean_env")
def test_endpoints_in_docs_match_the_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")  # the sleep-mode endpoints exist only so
    apps = (
        create_app(Settings(enable_tokenizer_info_endpoint=True)),  # its flag-only route too
        create_app(Settings(runner="pooling")),
    )
    routes = {
        (route.method, route.resource.canonical)
        for app in apps  # a generation model's routes and a pooling model's
        for route in app.router.routes()
        # HEAD mirrors GET; "*" is the catch-all that answers 404 and 405.
        if route.method not in {"HEAD", "*"} and route.resource is not None
    }
    documented = set(ENDPOINT.findall(_text(DOCS / "api.md")))
    assert ("POST", "/v1/chat/completions") in routes
    assert not routes - documented, (
        f"routes missing from docs/api.md: {sorted(routes - documented)}"
    )
    assert not documented - routes, (
        f"docs/api.md names unknown routes: {sorted(documented - routes)}"
    )


# -- metrics ------------------------------------------------------------------------


def _families() -> list[tuple[str, str, set[str]]]:
    """(name, type, sample names) of every metric family the server exposes, in any model."""
    step = Settings(latency_model="step")
    step_metrics = Metrics(step)
    step_engine = Engine(step, observer=step_metrics)
    assert step_engine.step is not None
    step_metrics.track_step(step_engine.step, step)
    families: dict[str, tuple[str, str, set[str]]] = {}
    for metrics in (Metrics(Settings()), step_metrics):
        for family in text_string_to_metric_families(metrics.exposition().decode()):
            samples = {sample.name for sample in family.samples}
            families[family.name] = (family.name, family.type, samples)
    return list(families.values())


def _exposed_name(name: str, kind: str) -> str:
    """The name as it appears in the text exposition (counters gain ``_total``)."""
    return f"{name}_total" if kind == "counter" else name


def _documented_types() -> dict[str, str]:
    """Metric name -> type, from the ``| `name` | type |`` rows of docs/metrics.md."""
    types: dict[str, str] = {}
    for line in _text(METRICS).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`(?:vllm|llmsim):[a-z0-9_]+`", cells[0]):
            types[cells[0].strip("`")] = cells[1]
    return types


@pytest.mark.usefixtures("clean_env")
def test_every_exposed_metric_is_documented_with_its_type() -> None:
    docs = _text(METRICS)
    types = _documented_types()
    families = _families()
    assert any(name == "vllm:num_requests_running" for name, _, _ in families)
    for name, kind, _ in families:
        exposed = _exposed_name(name, kind)
        assert _mentions(docs, exposed), f"{exposed} is exposed but not in docs/metrics.md"
        if not name.endswith("_created"):
            assert types.get(exposed) == kind, (
                f"{exposed}: docs/metrics.md should list it as a {kind}"
            )


@pytest.mark.usefixtures("clean_env")
def test_every_documented_metric_exists() -> None:
    known: set[str] = set()
    for name, kind, samples in _families():
        known |= {name, _exposed_name(name, kind), *samples}
        if kind in ("counter", "histogram"):
            known.add(f"{name}_created")  # absent when PROMETHEUS_DISABLE_CREATED_SERIES is set
    sleep_registry = CollectorRegistry()  # registered only with --enable-sleep-mode
    SleepController(None, enabled=True, registry=sleep_registry)
    known |= {family.name for family in sleep_registry.collect()}
    known |= {series.sample_name for series in SERIES}  # vLLM's, listed though not simulated
    for path in [README, *_doc_pages()]:
        unknown = sorted(set(METRIC_NAME.findall(_text(path))) - known)
        assert not unknown, f"{path.relative_to(ROOT)} names metrics the server lacks: {unknown}"


@pytest.mark.parametrize(
    "buckets",
    [TTFT_BUCKETS, TOKEN_GAP_BUCKETS, REQUEST_LATENCY_BUCKETS, N_BUCKETS, ITERATION_TOKEN_BUCKETS],
)
def test_histogram_buckets_are_documented(buckets: tuple[float, ...]) -> None:
    assert ", ".join(str(bound) for bound in buckets) in _text(METRICS)


# -- README -------------------------------------------------------------------------


def _code_lines(text: str) -> list[str]:
    return [line.strip() for block in FENCE.findall(text) for line in block.splitlines()]


@pytest.mark.parametrize("command", [INSTALL_AND_RUN, RUN_TESTS])
def test_readme_shows_the_two_commands_near_the_top(command: str) -> None:
    text = _text(README)
    top = text.split("\n## ", 1)[0]
    assert command in _code_lines(top), f"README.md must show `{command}` before its first section"


def test_readme_names_the_default_nox_sessions() -> None:
    tree = ast.parse(_text(ROOT / "noxfile.py"))
    sessions: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and ast.unparse(node.targets[0]) == "nox.options.sessions"
        ):
            sessions = list(ast.literal_eval(node.value))
    assert sessions, "noxfile.py no longer sets nox.options.sessions"
    readme = _text(README)
    for session in sessions:
        assert f"`{session}`" in readme, f"README.md does not mention the nox session {session}"


# -- links --------------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    text = FENCE.sub("", _text(path))
    for match in re.finditer(r"^#{1,6} (.+?)\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@pytest.mark.parametrize(
    "path",
    [README, ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_relative_links_resolve(path: Path) -> None:
    for target in LINK.findall(FENCE.sub("", _text(path))):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.relative_to(ROOT)}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{path.relative_to(ROOT)}: no anchor {target}"


# -- the documentation site ---------------------------------------------------------

NAV_ENTRY = re.compile(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$", re.MULTILINE)


def test_every_page_is_in_the_site_navigation_and_every_entry_exists() -> None:
    nav = set(NAV_ENTRY.findall(_text(ROOT / "mkdocs.yml")))
    pages = {str(path.relative_to(DOCS)) for path in _doc_pages()}
    assert "recipes/load-testing.md" in nav
    assert not pages - nav, f"pages missing from the nav in mkdocs.yml: {sorted(pages - nav)}"
    assert not nav - pages, f"mkdocs.yml lists pages that do not exist: {sorted(nav - pages)}"


def test_docs_extra_has_what_mkdocs_yml_uses() -> None:
    config = _text(ROOT / "mkdocs.yml")
    extra = _text(ROOT / "pyproject.toml").split("\ndocs = [", 1)[1].split("]", 1)[0]
    assert "name: material" in config
    assert "mkdocs-material" in extra
    assert "github-callouts" not in config or "markdown-callouts" in extra
    assert "pymdownx." not in config or "pymdown-extensions" in extra


def test_nox_docs_session_checks_the_reference_and_builds_strictly() -> None:
    noxfile = _text(ROOT / "noxfile.py")
    assert '"docs/gen_config_reference.py", "--check"' in noxfile
    assert '"mkdocs", "build", "--strict"' in noxfile
    ci = _text(ROOT / ".ci" / "run")
    assert ci.index("nox -s tests lint typecheck") < ci.index("nox -s docs")


# -- the SDK example against a real server ------------------------------------------


def test_openai_client_example_runs_against_a_server(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    pytest.importorskip("openai")
    server = llmsim_server("--mode", "echo")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMSIM_", "OPENAI_"))
    }
    result = subprocess.run(
        [sys.executable, str(CLIENT), "--base-url", server.api_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    # Echo mode answers with the last user message, in the plain and the streamed chat.
    assert result.stdout.count("Say hello to the gateway team in one sentence.") >= 2
    assert "completion: 'The three most useful gateway metrics are'" in result.stdout


def _run_example(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LLMSIM_", "OPENAI_"))
    }
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )


def test_load_test_example_reports_streamed_requests_as_json(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    pytest.importorskip("openai")
    server = llmsim_server("--time-to-first-token", "20ms", "--inter-token-latency", "1ms")
    result = _run_example(
        LOAD_TEST, "--base-url", server.api_url, "--requests", "24", "--concurrency", "6",
        "--max-tokens", "8", "--stream", "--json",
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    summary = json.loads(result.stdout)
    assert (summary["requests"], summary["ok"], summary["failed"]) == (24, 24, 0)
    assert 0 < summary["output_tokens"] <= 24 * 8
    assert summary["ttft_s"]["p50"] >= 0.02
    assert summary["latency_s"]["max"] >= summary["ttft_s"]["p50"]


def test_load_test_example_counts_429s_and_fails_past_the_error_budget(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    pytest.importorskip("openai")
    server = llmsim_server(
        "--max-running-requests", "1", "--max-waiting-queue-length", "0",
        "--time-to-first-token", "300ms",
    )  # fmt: skip
    args = ["--base-url", server.api_url, "--requests", "6", "--concurrency", "6", "--json"]
    strict = _run_example(LOAD_TEST, *args)
    assert strict.returncode == 1, strict.stderr
    summary = json.loads(strict.stdout)
    assert summary["ok"] >= 1
    assert summary["errors"] == {"429 RateLimitError": summary["failed"]}
    assert summary["failed"] >= 1
    lenient = _run_example(LOAD_TEST, *args, "--max-error-rate", "100")
    assert lenient.returncode == 0, lenient.stderr


def _example_module(path: Path) -> ModuleType:
    """An example script or docs helper, imported as a module by its file name."""
    name = path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


LORA_EXPOSITION = """\
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:lora_requests_info{max_lora="1",running_lora_adapters="a",waiting_lora_adapters="b"} 30.0
vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 10.0
vllm:lora_requests_info{max_lora="1",running_lora_adapters="a",waiting_lora_adapters=""} 20.0
"""


def test_lora_router_state_takes_the_newest_lora_series_and_prefers_affinity() -> None:
    router = _example_module(LORA_ROUTER)
    busy = router.parse_state("busy", LORA_EXPOSITION)
    assert (busy.running, busy.waiting, busy.kv_cache_usage) == (1.0, 2.0, 0.25)
    assert (busy.running_adapters, busy.waiting_adapters) == (("a",), ("b",))
    assert busy.free_lora_slots == 0
    older = LORA_EXPOSITION.replace(
        'waiting_lora_adapters="b"} 30.0', 'waiting_lora_adapters=""} 5.0'
    )
    idle = router.parse_state(
        "idle",
        older.replace(
            'waiting{engine="0",model_name="m"} 2.0', 'waiting{engine="0",model_name="m"} 0.0'
        ),
    )
    assert idle.running_adapters == ("a",)
    assert idle.waiting_adapters == ()
    assert router.pick([busy, idle], "a").url == "idle"
    assert router.pick([busy, idle], "b").url == "idle"  # lower queue wins among full replicas


def test_lora_router_state_sees_a_waiting_adapter_on_a_real_server(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    busy = llmsim_server(
        "--lora", "a,b", "--max-loras", "1", "--max-cpu-loras", "2",
        "--inter-token-latency", "100ms",
    )  # fmt: skip
    idle = llmsim_server("--lora", "a,b")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "ignore_eos": True}

    def send(model: str) -> None:
        request = urllib.request.Request(
            busy.api_url + "/chat/completions",
            data=json.dumps({**body, "model": model}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(send, "a")
        _wait_for_metric(busy.base_url, 'running_lora_adapters="a"')
        waiting = pool.submit(send, "b")
        _wait_for_metric(busy.base_url, 'waiting_lora_adapters="b"')
        result = _run_example(LORA_ROUTER, busy.base_url, idle.base_url, "--adapter", "b")
        running.result(timeout=30)
        waiting.result(timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "running_adapters=a waiting_adapters=b" in lines[0]
    assert "waiting=1" in lines[0]
    assert lines[-1] == f"route b -> {idle.base_url}"


def _wait_for_metric(base_url: str, fragment: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
            if fragment in response.read().decode():
                return
        time.sleep(0.05)
    pytest.fail(f"{fragment} never appeared in {base_url}/metrics")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("../examples/profile.toml", "https://github.com/o/r/blob/main/examples/profile.toml"),
        ("../../examples/load/", "https://github.com/o/r/tree/main/examples/load"),
        ("../CHANGELOG.md", "https://github.com/o/r/blob/main/CHANGELOG.md"),
        ("configuration.md", None),
        ("../no-such-file.md", None),
        ("https://example.com/x", None),
    ],
)
def test_site_hook_points_links_outside_docs_at_the_repository(
    target: str, expected: str | None
) -> None:
    hooks = _example_module(DOCS / "mkdocs_hooks.py")
    page_dir = DOCS / "recipes" if target.startswith("../../") else DOCS
    assert hooks.repository_link(target, page_dir, DOCS, "https://github.com/o/r/") == expected
