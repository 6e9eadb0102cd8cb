"""The image's health check: ``/health`` answers on LLMSIM_PORT, over HTTP or HTTPS.

The slim image has no curl. A server started with ``--ssl-certfile`` or
``--self-signed-certs`` answers HTTPS only; the check does not verify its certificate,
it only asks whether the server is up.
"""

from __future__ import annotations

import os
import ssl
import urllib.request

PORT = os.environ.get("LLMSIM_PORT", "8000")


def healthy(scheme: str) -> bool:
    context = ssl._create_unverified_context() if scheme == "https" else None
    url = f"{scheme}://127.0.0.1:{PORT}/health"
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(0 if healthy("http") or healthy("https") else 1)
