"""The plain install is enough: llmsim imports at module level only what its core
dependencies install; everything optional is imported where it is used, behind its extra."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "llmsim"
CORE = {
    "typer",
    "aiohttp",
    "rich",
    "pydantic",
    "pydantic_settings",
    "pydantic_core",
    "tomli_w",
    "tomli",
    "prometheus_client",
    "yarl",  # aiohttp's
    "multidict",  # aiohttp's
    "annotated_types",  # pydantic's
    "llmsim",
}
"""Top-level names that ``pip install llmsim`` (no extras) provides."""


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports run when the module loads: not inside a function, a ``try`` (an optional
    import with its fallback) or ``if TYPE_CHECKING``."""
    found: list[tuple[int, str]] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _sources() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py") if "generated" not in path.parts]


def test_module_level_imports_come_with_the_plain_install() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = CORE | _optional_layer(path) | set(sys.stdlib_module_names)
        offenders += [
            f"{path.relative_to(PACKAGE)}:{line}: {name}"
            for line, name in _module_level_imports(tree)
            if name not in allowed and name != "__future__"
        ]
    assert offenders == []


def _optional_layer(path: Path) -> set[str]:
    """Modules that are only imported once their extra is known to be there."""
    parts = path.relative_to(PACKAGE).parts
    if parts[:2] == ("api", "grpc"):  # llmsim[grpc], checked before --grpc-port is served
        return {"grpc", "google", "grpc_health", "grpc_reflection"}
    if parts == ("observability", "kv_events.py"):  # llmsim[kv-events], imported when on
        return {"msgspec", "zmq"}
    if parts == ("api", "openai", "plain_structs.py"):  # llmsim[fast], imported in a try
        return {"msgspec"}
    return set()
