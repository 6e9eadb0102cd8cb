"""Values for the JSON-Schema ``format`` keyword: each one a valid example of its format."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

_WORDS = (
    "alpha", "bravo", "cedar", "delta", "ember", "falcon", "garnet", "harbor",
    "indigo", "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "pebble",
)  # fmt: skip
_TLDS = ("com", "org", "net", "io", "dev")


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2000, 2030):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _host(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}.{rng.choice(_TLDS)}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ipv6(rng: random.Random) -> str:
    return ":".join(f"{rng.getrandbits(16):x}" for _ in range(8))


FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda rng: f"{_date(rng)}T{_time(rng)}",
    "date": _date,
    "time": _time,
    "duration": lambda rng: f"P{rng.randint(1, 30)}DT{rng.randint(1, 23)}H",
    "email": lambda rng: f"{rng.choice(_WORDS)}@{_host(rng)}",
    "idn-email": lambda rng: f"{rng.choice(_WORDS)}@{_host(rng)}",
    "hostname": _host,
    "idn-hostname": _host,
    "uri": lambda rng: f"https://{_host(rng)}/{rng.choice(_WORDS)}",
    "iri": lambda rng: f"https://{_host(rng)}/{rng.choice(_WORDS)}",
    "uri-reference": lambda rng: f"/{rng.choice(_WORDS)}/{rng.randint(1, 999)}",
    "iri-reference": lambda rng: f"/{rng.choice(_WORDS)}/{rng.randint(1, 999)}",
    "url": lambda rng: f"https://{_host(rng)}/{rng.choice(_WORDS)}",
    "uuid": _uuid,
    "ipv4": lambda rng: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
    "ipv6": _ipv6,
    "json-pointer": lambda rng: f"/{rng.choice(_WORDS)}/{rng.randint(0, 9)}",
    "relative-json-pointer": lambda rng: f"{rng.randint(0, 3)}/{rng.choice(_WORDS)}",
    "regex": lambda rng: f"^{rng.choice(_WORDS)}[0-9]+$",
    "uri-template": lambda rng: f"https://{_host(rng)}/{{{rng.choice(_WORDS)}}}",
    "byte": lambda rng: "aGVsbG8gd29ybGQ=",
    "binary": lambda rng: rng.choice(_WORDS),
    "password": lambda rng: f"{rng.choice(_WORDS).capitalize()}-{rng.randint(1000, 9999)}!",
}
"""Known formats; an unknown ``format`` is an annotation and is ignored, as the spec allows."""


def word(rng: random.Random) -> str:
    return rng.choice(_WORDS)
