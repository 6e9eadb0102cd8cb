#!/usr/bin/env python3
"""Regenerate the table of vLLM's routes in docs/api.md from ``llmsim.api.http.route_inventory``.

Only the region between the BEGIN/END markers is rewritten; ``tests/test_route_inventory.py``
fails when the committed region differs from what this script renders.

Usage::

    python docs/gen_route_table.py          # rewrite the region
    python docs/gen_route_table.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's llmsim, whatever else is installed

from llmsim.api.http.route_inventory import markdown_table  # noqa: E402

API_DOC = ROOT / "docs" / "api.md"
BEGIN = "<!-- BEGIN generated route table: python docs/gen_route_table.py -->\n"
END = "<!-- END generated route table -->\n"


def rendered(text: str) -> str:
    """``text`` with the region between the markers replaced by the current table."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + BEGIN + markdown_table() + END + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    args = parser.parse_args(argv)
    text = API_DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{API_DOC} lacks the route table markers", file=sys.stderr)
        return 1
    new = rendered(text)
    if args.check:
        if new != text:
            print(
                "docs/api.md's route table is stale: python docs/gen_route_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    API_DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
