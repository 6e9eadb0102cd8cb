"""The documentation stays in step with the code.

Fails when a setting, a ``serve`` option or a metric is missing from the docs, when the docs
name a metric the server does not expose, when the README loses its two commands, when the
example profile stops loading, or when the OpenAI SDK example stops working against a server.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import typer.main
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from llmsim.api import create_app
from llmsim.cli import app
from llmsim.config import Settings, env_name, option_flag
from llmsim.metrics import (
    N_BUCKETS,
    REQUEST_LATENCY_BUCKETS,
    TOKEN_GAP_BUCKETS,
    TTFT_BUCKETS,
    Metrics,
)
from llmsim.settings_sources import display_value, load_settings, read_profile

if TYPE_CHECKING:
    from conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIGURATION = DOCS / "configuration.md"
METRICS = DOCS / "metrics.md"
PROFILE = ROOT / "examples" / "profile.toml"
CLIENT = ROOT / "examples" / "openai_client.py"

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
def test_endpoints_in_docs_match_the_routes() -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in create_app(Settings()).router.routes()
        if route.method != "HEAD" and route.resource is not None
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
    """(name, type, sample names) of every metric family the server exposes."""
    exposition = Metrics(Settings()).exposition().decode()
    return [
        (family.name, family.type, {sample.name for sample in family.samples})
        for family in text_string_to_metric_families(exposition)
    ]


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
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        unknown = sorted(set(METRIC_NAME.findall(_text(path))) - known)
        assert not unknown, f"{path.relative_to(ROOT)} names metrics the server lacks: {unknown}"


@pytest.mark.parametrize(
    "buckets", [TTFT_BUCKETS, TOKEN_GAP_BUCKETS, REQUEST_LATENCY_BUCKETS, N_BUCKETS]
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
    [README, ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))],
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
