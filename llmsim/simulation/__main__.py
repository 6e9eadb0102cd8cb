"""``python -m llmsim.simulation replay RUN.json [...] --profile NAME``: published versus model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmsim.settings.model import ConfigError
from llmsim.settings.sources import load_settings
from llmsim.simulation.benchmark_run import RunFileError, load_runs, replay, report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmsim.simulation")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "replay",
        help="replay vLLM serving benchmark results in virtual time with the step model",
    )
    cmd.add_argument("runs", nargs="+", type=Path, help="result files, in the order they ran")
    cmd.add_argument("--profile", "-p", help="named profile (built in or from --config)")
    cmd.add_argument("--config", "-c", help="TOML file with settings and profiles")
    cmd.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set frontend_latency=15ms (repeatable)",
    )
    cmd.add_argument("--seed", type=int, default=0, help="arrivals and jitter (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags: dict[str, object] = {"latency_model": "step"}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item}: expected KEY=VALUE", file=sys.stderr)
            return 2
        flags[key.strip().replace("-", "_")] = value.strip()
    if args.profile:
        flags["profile"] = args.profile
    if args.config:
        flags["config"] = args.config
    try:
        settings = load_settings(flags).settings
        runs = [run for path in args.runs for run in load_runs(path)]
    except (ConfigError, RunFileError) as exc:
        lines = exc.lines if isinstance(exc, ConfigError) else [str(exc)]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    for line in report(replay(settings, runs, seed=args.seed)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
