"""The standard ``grpc.health.v1`` status following the simulated lifecycle (grpc's asyncio
health servicer: ``Watch`` streams run on the event loop, not in threads)."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from llmsim.runtime.lifecycle import Lifecycle


async def follow_lifecycle(
    servicer: health.aio.HealthServicer, lifecycle: Lifecycle, service: str
) -> None:
    """NOT_SERVING while the simulated model loads, SERVING once it is ready (for the whole
    server and for ``service``); draining turns them back (``enter_graceful_shutdown``)."""
    names = ("", service)
    for name in names:
        await servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    while True:  # the loop's clock may wake a hair early: sleep again until it is time
        delay = lifecycle.seconds_to_ready
        if delay <= 0:
            break
        await asyncio.sleep(delay)
    if lifecycle.phase == "ready":
        for name in names:
            await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
