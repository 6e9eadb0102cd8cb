"""Reading request bodies under the body limit, compressed ones included.

aiohttp can inflate ``Content-Encoding: gzip`` bodies itself, but it inflates what arrives
whether or not the handler still wants it: a small body that inflates to a gibibyte keeps the
event loop busy after its 413 went out. The server therefore hands bodies over as they were
sent (:func:`serve_bodies_encoded`) and :func:`read_body` inflates them here, in small slices
that yield to the loop, stopping the moment the limit is crossed.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.keys import BODY

DECODES_BODIES = web.AppKey("decodes_bodies", bool)
"""Set when the server passes bodies on still encoded, so this module decodes them."""

SLICE = 64 * 1024
"""Bytes inflated between two returns to the event loop."""

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib window settings of the encodings read; deflate bodies without the zlib wrapper,
which some clients send, are read too (see :func:`_decoder`)."""
IDENTITY = ("", "identity")


def serve_bodies_encoded(app: web.Application) -> dict[str, Any]:
    """Options for ``app``'s runner that leave bodies encoded, and mark ``app`` to decode them."""
    app[DECODES_BODIES] = True
    return {"auto_decompress": False}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body, decoded, at most ``limit`` bytes; a 413, 415 or 400 in vLLM's shape."""
    if request.content_length is not None and request.content_length > limit:
        raise APIError(
            413, f"Request body too large: {request.content_length} bytes (limit {limit})."
        )
    header = request.headers.get("Content-Encoding")
    if header is None:  # the usual body: nothing to decode
        return await request.read()  # aiohttp enforces the limit (client_max_size)
    encoding = header.strip().lower()
    if encoding in IDENTITY or not request.app.get(DECODES_BODIES, False):
        return await request.read()  # aiohttp enforces the limit (client_max_size)
    wbits = WBITS.get(encoding)
    if wbits is None:
        raise APIError(
            415,
            f"Unsupported Content-Encoding {encoding!r}: send the body as it is, or "
            "compressed with gzip or deflate.",
        )
    body = request.get(BODY)
    if body is None:
        body = request[BODY] = await _inflate(request, encoding, wbits, limit)
    return body


async def _inflate(request: web.Request, encoding: str, wbits: int, limit: int) -> bytes:
    decoder: Any = None
    received = 0
    out = bytearray()
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        if decoder is None:
            decoder = _decoder(encoding, wbits, chunk)
        data = chunk
        while data and not decoder.eof:
            try:
                out += decoder.decompress(data, SLICE)
            except zlib.error:
                raise _not_encoded(encoding) from None
            if len(out) > limit:
                raise _too_large(limit, decoded=True)
            data = decoder.unconsumed_tail
            if data:
                await asyncio.sleep(0)  # let other requests run between slices
        if decoder.eof:
            break
    if decoder is None:
        return b""
    if not decoder.eof:
        raise _not_encoded(encoding)
    return bytes(out)


def _decoder(encoding: str, wbits: int, first: bytes) -> Any:
    """A zlib decompressor; a deflate body that lacks its zlib header (RFC 1950) is raw."""
    if encoding == "deflate" and first and first[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS
    return zlib.decompressobj(wbits)


def _too_large(limit: int, *, decoded: bool = False) -> APIError:
    where = " once decompressed" if decoded else ""
    return APIError(413, f"Request body too large: more than {limit} bytes{where} (limit {limit}).")


def _not_encoded(encoding: str) -> APIError:
    return APIError(
        400, f"The body is not valid {encoding} data, as its Content-Encoding header says."
    )
