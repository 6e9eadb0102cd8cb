"""Fleet files: several simulated vLLM instances described in one TOML file.

::

    base_port = 8100              # optional: ports for instances that name none
    [defaults]                    # optional: settings every instance starts from
    inter_token_latency = "20ms"
    [[instance]]
    name = "fast-1"               # required, unique
    port = 8101                   # optional
    model = "meta-llama/Llama-3.1-8B-Instruct"

Each instance's settings are built by :func:`~llmsim.settings.sources.load_settings`
with ``[defaults]`` and the instance's table as its flags, so every setting works per
instance (including ``config``, a profile, resolved relative to the fleet file) and
``LLMSIM_*`` variables still fill what the file leaves out. Every instance is checked
up front and every problem reported, one line each, naming the instance and the key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from llmsim.console.banner import instances_table
from llmsim.pool.spread import worker_count
from llmsim.settings.data_parallel import data_parallel_layout
from llmsim.settings.instances import Instance, data_parallel_instances
from llmsim.settings.model import MAX_PORT, ConfigError, DataParallelBackend, Settings
from llmsim.settings.renamed import RENAMED
from llmsim.settings.sources import load_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_BASE_PORT = 8000
MAX_INSTANCES = 64
"""Servers a fleet may start (with ``dp_ports``, data-parallel ranks count one each)."""
MAX_WORKER_INSTANCES = 256
"""The same on the ``workers`` backend, whose instances cost a few MB each, not a process."""
TOP_LEVEL_KEYS = ("base_port", "defaults", "instance")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SHARED_LINE = re.compile(r"^(?:\[defaults\] |(?:LLMSIM|VLLM)_[A-Z0-9_]+: )")
"""Errors that come from [defaults] or the environment: reported once, not per instance."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class FleetError(ConfigError):
    """The fleet file cannot be run; each line names the instance and the key."""


@dataclass(frozen=True)
class FleetPlan:
    """What ``llmsim fleet`` starts: one instance per process and port."""

    path: Path
    instances: list[Instance]
    backend: DataParallelBackend
    log_level: str
    workers: int | None = None
    """With the ``workers`` backend, how many worker processes (None: one per core)."""


@dataclass
class _Entry:
    """One ``[[instance]]`` table while it is being checked."""

    label: str
    name: str
    table: dict[str, Any]
    settings: Settings | None = None
    port: int | None = None


def load_fleet(path: Path, base_port: int | None = None) -> FleetPlan:
    """Parse, validate and plan a fleet file, or raise :class:`FleetError`."""
    data = _read(path)
    problems = _Problems(path)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.add(f"unknown top-level key {key!r} (expected {', '.join(TOP_LEVEL_KEYS)})")
    base = _base_port(data, base_port, problems)
    defaults = _defaults(data, path, problems)
    entries = _entries(data, path, problems)
    for entry in entries:
        _load_instance(entry, defaults, problems)
    ports = plan_ports([(e.label, e.port, _size(e)) for e in entries], base, problems)
    if problems.lines:
        raise FleetError(problems.lines)
    instances = [
        instance
        for entry, port in zip(entries, ports, strict=True)
        for instance in _expand(entry, port)
    ]
    _check_whole_fleet(instances, problems)
    if problems.lines:
        raise FleetError(problems.lines)
    levels = {instance.settings.log_level for instance in instances}
    return FleetPlan(
        path=path,
        instances=instances,
        backend=instances[0].settings.data_parallel_backend,
        workers=instances[0].settings.workers,
        # One logging set-up for the fleet: the most verbose level any instance asks for.
        log_level=min(levels, key=LOG_LEVELS.index),
    )


def _check_whole_fleet(instances: list[Instance], problems: _Problems) -> None:
    backends = {instance.settings.data_parallel_backend for instance in instances}
    limit = MAX_WORKER_INSTANCES if backends == {"workers"} else MAX_INSTANCES
    if len(instances) > limit:
        problems.add(f"{len(instances)} instances in all; at most {limit} can run")
    _check_grpc_ports(instances, problems)
    if len(backends) > 1:
        problems.add(
            "data_parallel_backend: must be the same for every instance (set it in [defaults])"
        )
    if len({instance.settings.workers for instance in instances}) > 1:
        problems.add("workers: must be the same for every instance (set it in [defaults])")


def _check_grpc_ports(instances: list[Instance], problems: _Problems) -> None:
    """Each server's gRPC port its own (a grpc_port in [defaults] would be every one's)."""
    grpc_ports = [i.settings.grpc_port for i in instances if i.settings.grpc_port]
    shared = sorted({port for port in grpc_ports if grpc_ports.count(port) > 1})
    if shared:
        problems.add(
            f"grpc_port: {', '.join(map(str, shared))} named by more than one instance "
            "(give each instance its own, or 0)"
        )
    http = {instance.settings.port for instance in instances}
    for port in sorted(set(grpc_ports) & http):
        problems.add(f"grpc_port: {port} is also an instance's HTTP port")


def render_plan(console: Console, plan: FleetPlan) -> None:
    """The dry run: what would start, where, and with which settings."""
    ports = [instance.settings.port for instance in plan.instances]
    how = _how(plan)
    console.print(
        f"[bold]fleet {escape(str(plan.path))}[/bold]: {len(plan.instances)} instances, {how}",
        highlight=False,
    )
    console.print(instances_table(plan.instances, ports))
    console.print(f"valid; start it with: llmsim fleet {plan.path}", highlight=False)


def _how(plan: FleetPlan) -> str:
    """How the plan runs its instances, as the start-up panel says it."""
    if plan.backend == "mp":
        return "one process each"
    if plan.backend == "inprocess" or len(plan.instances) == 1:
        return "one process"
    count = worker_count(plan.workers, len(plan.instances))
    return f"{count} worker process{'es' if count > 1 else ''}"


# -- reading ------------------------------------------------------------------------


class _Problems:
    """Error lines in the order found, each once, prefixed with the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        text = f"{self.path}: {line}"
        if text not in self.lines:
            self.lines.append(text)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except FileNotFoundError:
        raise FleetError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise FleetError([f"{path}: is a directory, not a TOML file"]) from None
    except OSError as exc:
        raise FleetError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError([f"{path}: not valid TOML: {exc}"]) from None


def _base_port(data: Mapping[str, Any], override: int | None, problems: _Problems) -> int:
    if override is not None:
        return override
    value = data.get("base_port", DEFAULT_BASE_PORT)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PORT:
        problems.add(f"base_port: must be an integer from 0 to {MAX_PORT}")
        return DEFAULT_BASE_PORT
    return value


def _settings_keys(
    table: Mapping[str, Any], where: str, path: Path, problems: _Problems, allowed: set[str]
) -> dict[str, Any]:
    """The table's settings (unknown keys reported and dropped; ``config`` made absolute)."""
    known: dict[str, Any] = {}
    for key, value in table.items():
        if key in allowed:
            continue
        if key not in Settings.model_fields and key not in RENAMED:
            problems.add(f"{where}: unknown key {key!r} (see `llmsim config init` for the keys)")
        elif key == "config" and isinstance(value, str):
            known[key] = str(path.parent / value)
        else:
            known[key] = value
    return known


def _defaults(data: Mapping[str, Any], path: Path, problems: _Problems) -> dict[str, Any]:
    table = data.get("defaults", {})
    if not isinstance(table, dict):
        problems.add("defaults: must be a table ([defaults])")
        return {}
    if "port" in table:
        problems.add("[defaults] port: give each instance its own port, or set base_port")
    return _settings_keys(table, "[defaults]", path, problems, {"port"})


def _entries(data: Mapping[str, Any], path: Path, problems: _Problems) -> list[_Entry]:
    tables = data.get("instance")
    if not isinstance(tables, list) or not tables:
        problems.add("no instances: add one [[instance]] table per instance")
        return []
    entries: list[_Entry] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            problems.add(f"instance #{number}: must be a table ([[instance]])")
            continue
        name = table.get("name")
        label = f"instance {name!r}" if isinstance(name, str) else f"instance #{number}"
        if name is None:
            problems.add(f"{label}: missing key 'name'")
        elif not isinstance(name, str) or not NAME.fullmatch(name):
            problems.add(
                f"{label}: name: use 1-63 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        elif name in seen:
            problems.add(f"{label}: name: given to more than one instance")
        seen.add(str(name))
        settings = _settings_keys(table, label, path, problems, {"name"})
        entries.append(_Entry(label, str(name or f"#{number}"), settings))
    return entries


def _load_instance(entry: _Entry, defaults: Mapping[str, Any], problems: _Problems) -> None:
    """Validate one instance's settings; its explicit port is kept for planning."""
    port = entry.table.get("port")
    flags = {**defaults, **entry.table, "port": port if port is not None else 0}

    def flag_name(field: str) -> str:
        if field in entry.table:
            return field
        return f"[defaults] {field}" if field in defaults else field

    try:
        entry.settings = load_settings(flags, flag_name=flag_name).settings
    except ConfigError as exc:
        for line in exc.lines:
            problems.add(line if SHARED_LINE.match(line) else f"{entry.label}: {line}")
        # Still plan its port, so that a clash is reported with the other problems.
        entry.port = port if isinstance(port, int) and not isinstance(port, bool) else None
        return
    entry.port = entry.settings.port if port is not None else None


def _size(entry: _Entry) -> int:
    """Ports the instance needs: one, or one per rank with ``dp_ports``."""
    return data_parallel_layout(entry.settings).port_count if entry.settings is not None else 1


def _expand(entry: _Entry, port: int) -> list[Instance]:
    assert entry.settings is not None
    return data_parallel_instances(entry.settings.model_copy(update={"port": port}), entry.name)


# -- ports --------------------------------------------------------------------------


def plan_ports(
    wanted: list[tuple[str, int | None, int]], base: int, problems: _Problems
) -> list[int]:
    """A first port per instance: its own, or the next free range from ``base``.

    ``wanted`` holds (label, explicit port or None, ports needed). Port 0 (explicit, or
    a base of 0) lets the operating system choose; it never clashes.
    """
    taken: dict[int, str] = {}
    for label, port, size in wanted:
        if not port:
            continue
        for candidate in range(port, port + size):
            owner = taken.setdefault(candidate, label)
            if owner != label:
                problems.add(f"{label}: port: {candidate} is also used by {owner}")
                break
    ports: list[int] = []
    next_port = base
    for label, port, size in wanted:
        if port is not None or base == 0:
            ports.append(port or 0)
            continue
        start = _free_range(next_port, size, taken)
        if start is None:
            problems.add(f"{label}: port: no {size} free ports left from {next_port}")
            ports.append(0)
            continue
        for candidate in range(start, start + size):
            taken[candidate] = label
        ports.append(start)
        next_port = start + size
    return ports


def _free_range(start: int, size: int, taken: Mapping[int, str]) -> int | None:
    candidate = start
    while candidate + size - 1 <= MAX_PORT:
        clash = next((p for p in range(candidate, candidate + size) if p in taken), None)
        if clash is None:
            return candidate
        candidate = clash + 1
    return None
