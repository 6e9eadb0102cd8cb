"""Developer tasks. ``nox`` alone runs what CI runs: tests, lint and typecheck."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

SOURCES = [
    "llmsim",
    "tests",
    "benchmarks",
    "examples",
    "docs/gen_config_reference.py",
    "docs/gen_metrics_reference.py",
    "docs/gen_step_plots.py",
    "docs/mkdocs_hooks.py",
    "noxfile.py",
]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, with the optional speed-ups installed (uvloop, orjson)."""
    session.install("-e", ".[test,fast]")
    session.run("pytest", *session.posargs)


@nox.session(name="tests-plain")
def tests_plain(session: nox.Session) -> None:
    """The test suite on the plain install: no uvloop, no orjson."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=["3.10", "3.11", "3.12", "3.13"], name="tests-matrix")
def tests_matrix(session: nox.Session) -> None:
    """The test suite on every supported Python that is installed."""
    session.install("-e", ".[test,fast]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, then the layering contracts in ``[tool.importlinter]`` (imports point down)."""
    session.install("-e", ".", "ruff>=0.5", "import-linter>=2.0")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(
        "-e", ".[fast,tokenizers,kv-events,tls,yaml,grpc,plot,bench]", "mypy>=1.10", "types-PyYAML"
    )
    session.run("mypy", "llmsim")
    # the benchmarks too; without_speedups/ holds stand-ins that hide the optional modules
    session.run("mypy", "benchmarks", "--exclude", "benchmarks/without_speedups")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built with ``--strict`` into ``site/``.

    Fails first if the generated configuration reference or metrics table is out of date (fix
    them with ``python docs/gen_config_reference.py`` and ``python docs/gen_metrics_reference.py``),
    then on any broken link, anchor or nav entry.
    """
    session.install("-e", ".[docs]")
    session.run("python", "docs/gen_config_reference.py", "--check")
    session.run("python", "docs/gen_metrics_reference.py", "--check")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: llmsim against a bare aiohttp ceiling (``-- --quick`` for ~1 min).

    Not part of the default sessions; results go to benchmarks/results/.
    """
    session.install("-e", ".[fast]")
    session.run("python", "benchmarks/run.py", *session.posargs)
