"""Awaited defers: 1,000 ``defer_async`` calls from an asyncio app while a ticker runs every 10 ms
on the same event loop; how late the ticker's ticks come shows whether the defers block it.

Figures: defers per second (10 awaited at a time), and the ticker's lateness, max and p99: a
tick due at t that runs at t + x is x late. The goal is no tick later than 5 ms (issue 13). The
same ticker alone, for as long, before the defers, is the control: how late ticks come on this
machine at this moment with nothing else on the loop.
"""
from __future__ import annotations

import asyncio
import time

from benchmarks.apps.tasks import make_app
from benchmarks.context import RunContext
from benchmarks.peers import protocol

TICK_S = 0.010
IN_FLIGHT = 10


def run(context: RunContext) -> None:
    defers = context.scale(1_000, 300)
    with context.server.fresh_database("async_defer") as dsn:
        context.say(f"async_defer: {defers} awaited defers, {IN_FLIGHT} at a time, a {TICK_S * 1000:.0f} ms ticker")
        rate, lateness_ms, control_ms = asyncio.run(_measure(dsn, defers))
    params = {"defers": defers, "in_flight": IN_FLIGHT, "tick_ms": TICK_S * 1000}
    context.figures.add("async_defer_control_tick_late_max_ms", round(max(control_ms), 3), "ms", **params)
    context.figures.add("async_defer_rate", round(rate, 1), "jobs/s", **params)
    context.figures.add("async_defer_tick_late_max_ms", round(max(lateness_ms), 3), "ms", **params)
    context.figures.add("async_defer_tick_late_p99_ms", round(protocol.percentile(sorted(lateness_ms), 0.99), 3), "ms", **params)


async def _measure(dsn: str, defers: int) -> tuple[float, list[float], list[float]]:
    app = make_app(dsn)
    noop = app.get_task("noop")
    # Opens the sessions of the pool: not part of what is measured.
    await asyncio.gather(*(noop.defer_async() for _ in range(IN_FLIGHT)))

    async def ticker(lateness_ms: list[float], stop: asyncio.Event) -> None:
        due = time.perf_counter() + TICK_S
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            lateness_ms.append((time.perf_counter() - due) * 1000)
            due += TICK_S

    control_ms: list[float] = []
    control_stop = asyncio.Event()
    control = asyncio.create_task(ticker(control_ms, control_stop))
    await asyncio.sleep(defers / 1500)  # about as long as the defers take
    control_stop.set()
    await control

    lateness_ms: list[float] = []
    stop = asyncio.Event()

    async def deferrer(count: int) -> None:
        for _ in range(count):
            await noop.defer_async()

    ticking = asyncio.create_task(ticker(lateness_ms, stop))
    started = time.perf_counter()
    share = defers // IN_FLIGHT
    await asyncio.gather(*(deferrer(share) for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    stop.set()
    await ticking
    app.store.close()
    return share * IN_FLIGHT / elapsed, lateness_ms, control_ms
