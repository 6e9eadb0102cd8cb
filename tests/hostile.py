"""Helpers for the hostile-request tests: raw HTTP calls (header values may be bytes),
vLLM's error shapes, and a watcher that polls the server while something heavy runs."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import RunningServer, start_server

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
MODEL = "llmsim/sim-model"
HI = [{"role": "user", "content": "hi"}]
WORK_LIMIT = 1_000_000
RESPONSIVE = 1.0
"""Seconds within which /health and a small chat must answer while heavy work runs."""


API_KEY = "k3y"


def hostile_server(tmp_path: Path) -> RunningServer:
    """A server with small limits: 1 MiB bodies, 1 000 000 units of work, an API key."""
    return start_server(
        [
            "--max-request-body-size",
            "1MiB",
            "--max-request-work",
            str(WORK_LIMIT),
            "--max-model-len",
            "4096",
            "--api-key",
            API_KEY,
            "--seed",
            "3",
        ],
        tmp_path,
    )


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: RunningServer,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str | bytes] | None = None,
    method: str = "POST",
    timeout: float = 30.0,
) -> Reply:
    """One request on its own connection; header values may be raw bytes."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        sent: dict[str, str | bytes] = {**AUTH, "Content-Type": "application/json"}
        sent.update(headers or {})
        for name, value in sent.items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        payload = response.read()
        found = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, found, payload, time.monotonic() - started)
    finally:
        connection.close()


def assert_error(reply: Reply, status: int) -> dict[str, Any]:
    """vLLM's error shape: ``{"error": {message, type, param, code}}`` with ``status``."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    payload = reply.json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert error["type"] == "BadRequestError"
    assert error["message"]
    return error


def assert_anthropic_error(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    payload = reply.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "BadRequestError"


@dataclass
class Watch:
    """Polls /health and a small chat while something heavy runs; the slowest answers."""

    server: RunningServer
    chat: bool = True
    """Poll a small chat too (a pooling server has none)."""
    slowest: dict[str, float] = field(default_factory=lambda: {"health": 0.0, "chat": 0.0})
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        small = {"model": MODEL, "messages": HI, "max_tokens": 2}
        while not self._stop.is_set():
            polls = [("health", "GET", "/health", None), ("chat", "POST", CHAT, small)]
            for name, method, path, body in polls if self.chat else polls[:1]:
                try:
                    reply = call(self.server, path, body, method=method, timeout=RESPONSIVE)
                except OSError as exc:
                    self.failures.append(f"{name}: {exc!r}")
                    continue
                if reply.status != 200:
                    self.failures.append(f"{name}: {reply.status}")
                self.slowest[name] = max(self.slowest[name], reply.seconds)
            time.sleep(0.02)

    def assert_responsive(self) -> None:
        assert not self.failures, self.failures
        assert max(self.slowest.values()) < RESPONSIVE, self.slowest
