"""The cold path through the live router: the request a spawn is for travels inside the Spawn call
(one round trip), yet policies still see it queued on the STARTING instance, as the simulator
shows a cold start's request; requests queued behind it run on that instance afterwards."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
import pytest

from wl.testing import PlatformClient, metric_value, start_platform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BUILD = Path(__file__).resolve().parent.parent / "examples" / "build"

ONE_INSTANCE_POLICY = '''
from policies.interface import INVOKE, SPAWN, Assign, KeepAlive, Policy

SEEN = "{seen}"


class OneInstance(Policy):
    """Everything on the function's first instance; writes what route saw of the instances."""
    name = "one_instance"

    def route(self, now_ms, request, fn):
        with open(SEEN, "a") as f:
            f.write(repr([(i.state, len(i.queue)) for i in fn.instances.values()]) + "\\n")
        for inst in fn.instances.values():
            return Assign(inst)
        return SPAWN

    def on_idle(self, now_ms, instance, fn):
        return INVOKE if instance.queue else KeepAlive(60_000)
'''


def test_a_cold_starts_request_rides_in_the_spawn_and_is_seen_queued(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    policy_file = tmp_path / "one_instance.py"
    policy_file.write_text(ONE_INSTANCE_POLICY.format(seen=seen))
    # A fresh node: the first spawn asks the registry and loads the compiled code from disk (a
    # few ms), so some of the requests sent together arrive while the instance is starting.
    platform = start_platform(tmp_path / "wl", policy=f"custom:{policy_file}", cache_dir=tmp_path / "cache")
    try:
        wl = PlatformClient(platform)
        wl.deploy("echo", BUILD / "echo.wasm", {"memory_mb": 16, "concurrency": 4})

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=wl.base_url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/invoke/echo", content=b"r%d" % i) for i in range(8)))

        answers = asyncio.run(burst())
        assert [r.status_code for r in answers] == [200] * 8
        assert sorted(r.content for r in answers) == sorted(b"r%d" % i for i in range(8))
        assert {r.headers["x-wl-instance"] for r in answers} == {answers[0].headers["x-wl-instance"]}
        views = [ast.literal_eval(line) for line in seen.read_text().splitlines()]
        assert views[0] == []
        # Every later arrival that found the instance starting saw all earlier requests queued
        # on it, the first one included, though that one was already on its way to the node
        # inside the Spawn call.
        starting = [(k, view) for k, view in enumerate(views) if view and view[0][0] == "starting"]
        assert starting, f"no request arrived during the cold start: {views}"
        assert all(view == [("starting", k)] for k, view in starting), starting
        # Cold = an instance was spawned for it (wlmodel's one definition, as in the simulator):
        # only the first; the others queued behind it waited on its cold start (their wait).
        cold = [r for r in answers if r.headers["x-wl-cold"] == "1"]
        assert len(cold) == 1
        text = wl.metrics()
        assert metric_value(text, "wl_router_cold_starts_total") == 1
    finally:
        platform.stop()
