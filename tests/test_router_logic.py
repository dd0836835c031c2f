"""The router's logic without sockets: placement, idle handling and keep-alive timing, kills,
failures, node death and removal, invalid policy answers, the instance cap. The real Router
runs on a virtual clock with in-process nodes (wlruntime.router.virtual)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from policies.interface import KILL, SPAWN, Assign, KeepAlive, Policy, Spawn
from wlruntime.router.keepalive import LEASE_DEFER_MS, LEASE_MARGIN_MS
from wlruntime.router.state import NODE_ERROR, Result, Throttled
from wlruntime.router.trace import outcome
from wlruntime.router.virtual import VirtualPlatform

pytestmark = pytest.mark.unit

COLD_MS = 10.0
EXEC_MS = 100.0


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details="connection reset")


async def platform(policy: Policy, nodes: tuple[str, ...] = ("n1", "n2"), capacity_mb: float = 1024) -> VirtualPlatform:
    p = await VirtualPlatform.create(policy, nodes, capacity_mb, duration_ms=lambda invoke: EXEC_MS,
                                     cold_start_ms=lambda fn: COLD_MS)
    p.deploy("f", {"memory_mb": 256, "max_instances": 10})
    return p


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class SpawnEach(Policy):
    """A new instance per request, kept alive 1 s."""
    name = "spawn_each"

    def route(self, now_ms, request, fn):
        return SPAWN

    def on_idle(self, now_ms, instance, fn):
        return KILL if instance.keepalive_until_ms is not None else KeepAlive(1000.0)


def test_a_new_instance_goes_to_the_node_with_the_most_free_memory() -> None:
    async def main() -> None:
        p = await platform(SpawnEach())
        await p.run([(0.0, k, "f", b"x", None) for k in range(3)])
        nodes = [p.outcomes[k].node for k in range(3)]
        assert nodes == ["n1", "n2", "n1"]      # ties: the least used, then the first
        assert all(p.outcomes[k].cold for k in range(3))
        assert [n.used_mb for n in p.router.nodes] == [512.0, 256.0]
    run(main())


def test_a_named_node_is_used_and_an_unknown_one_falls_back_and_is_counted() -> None:
    class Named(SpawnEach):
        def route(self, now_ms, request, fn):
            return Spawn(node="n2" if request.id == 0 else "nope")

    async def main() -> None:
        p = await platform(Named())
        await p.run([(0.0, 0, "f", b"", None), (1.0, 1, "f", b"", None)])
        assert p.outcomes[0].node == "n2" and p.outcomes[1].node == "n1"
        assert p.router.snapshot()["policy_fallbacks"] == {"route": 1}
    run(main())


def test_keep_alive_is_timed_by_the_router_and_the_node_only_holds_a_lease() -> None:
    async def main() -> None:
        p = await platform(SpawnEach(), nodes=("n1",))
        await p.run([(0.0, 0, "f", b"", None)])
        inst = next(iter(p.router.functions["f"].instances.values()))
        end = COLD_MS + EXEC_MS
        assert inst.state == "idle" and inst.keepalive_until_ms == end + 1000.0
        await p.advance(end + 999.0)
        node = p.nodes["n1"]
        lease = [entry for entry in node.log if entry[1] == "keep_alive"]
        assert [t for t, _, _ in lease] == [end + LEASE_DEFER_MS]     # once, after the deferral
        assert inst.state == "idle"
        await p.advance(end + 1000.0)                                 # the expiry: on_idle says KILL
        assert inst.state == "dead" and not p.router.functions["f"].instances
        assert node.log[-1] == (end + 1000.0, "kill", inst.instance_id)
        assert LEASE_MARGIN_MS > 0
    run(main())


def test_a_warm_instance_serves_the_next_request_and_a_kill_tells_the_node() -> None:
    class Once(Policy):
        name = "once"

        def on_idle(self, now_ms, instance, fn):
            return KILL if instance.invocations >= 2 else KeepAlive(10_000.0)

    async def main() -> None:
        p = await platform(Once(), nodes=("n1",))
        await p.run([(0.0, 0, "f", b"a", None), (500.0, 1, "f", b"b", None)])
        first, second = p.outcomes[0], p.outcomes[1]
        assert first.cold and not second.cold and first.instance == second.instance
        assert second.output == b"b"
        ops = [op for _, op, _ in p.nodes["n1"].log]
        assert ops == ["spawn", "keep_alive", "invoke", "kill"]
        assert p.router.nodes[0].used_mb == 0.0
    run(main())


def test_requests_queued_on_an_instance_run_there_one_after_the_other() -> None:
    class OneInstance(Policy):
        name = "one_instance"

        def route(self, now_ms, request, fn):
            for inst in fn.instances.values():
                return Assign(inst)
            return SPAWN

        def on_idle(self, now_ms, instance, fn):
            from policies.interface import INVOKE
            return INVOKE if instance.queue else KeepAlive(60_000.0)

    async def main() -> None:
        p = await platform(OneInstance(), nodes=("n1",))
        await p.run([(0.0, k, "f", b"%d" % k, None) for k in range(3)])
        results = [p.outcomes[k] for k in range(3)]
        assert len({r.instance for r in results}) == 1
        assert [r.cold for r in results] == [True, False, False]   # only the one it was spawned for
        assert [r.wait_ms for r in results] == [COLD_MS, COLD_MS + EXEC_MS, COLD_MS + 2 * EXEC_MS]
        rows = [outcome(row) for row in p.router.trace.rows]
        assert [row.wait_ms for row in rows] == [0.0, EXEC_MS, 2 * EXEC_MS]   # cold start excluded
        assert [row.cold_start_ms for row in rows] == [COLD_MS] * 3
        assert [row.status for row in rows] == ["ok"] * 3
    run(main())


def test_a_node_dying_mid_request_answers_it_and_places_the_queued_ones_elsewhere() -> None:
    class Pile(Policy):
        """Everything on the first instance, a new one only when there is none."""
        name = "pile"

        def route(self, now_ms, request, fn):
            for inst in fn.instances.values():
                return Assign(inst)
            return SPAWN

        def on_idle(self, now_ms, instance, fn):
            from policies.interface import INVOKE
            return INVOKE if instance.queue else KeepAlive(60_000.0)

    async def main() -> None:
        p = await platform(Pile())
        p.clock.now = 0.0
        p.submit(0, "f")
        p.submit(1, "f")
        await p.advance(50.0)                      # the spawn is under way on n1, request 1 queued
        p.nodes["n1"].fail = unavailable()
        await p.advance(COLD_MS + EXEC_MS)         # its Spawn call fails: n1 is dead
        await p.advance(1000.0)
        assert not p.router.nodes[0].alive and p.router.nodes[0].used_mb == 0.0
        failed, moved = p.outcomes[0], p.outcomes[1]
        assert isinstance(failed, Result) and failed.error == NODE_ERROR and failed.cold
        assert isinstance(moved, Result) and moved.ok and moved.node == "n2"
        assert moved.cold                          # its re-route spawned an instance for it
    run(main())


@pytest.mark.parametrize("details, placed_again", [
    ("failed to connect to all addresses", True),   # the Do never reached the node
    ("connection reset", False),                     # it may have run: never retried
])
def test_a_request_to_a_warm_instance_on_a_dead_node_is_placed_again_only_if_it_never_ran(
        details: str, placed_again: bool) -> None:
    async def main() -> None:
        p = await platform(KeepWarm())
        p.clock.now = 0.0
        p.submit(0, "f")
        await p.advance(COLD_MS + EXEC_MS + 10.0)   # request 0 ran on n1, its instance is idle
        assert p.outcomes[0].node == "n1"
        p.nodes["n1"].fail = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                                  grpc.aio.Metadata(), details=details)
        p.submit(1, "f")
        await p.advance(1000.0)
        second = p.outcomes[1]
        assert not p.router.nodes[0].alive
        if placed_again:
            assert second.ok and second.node == "n2" and second.cold, second
        else:
            assert second.error == NODE_ERROR and second.node == "n1", second
    run(main())


class KeepWarm(Policy):
    """The idle instance serves the next request."""
    name = "keep_warm"

    def route(self, now_ms, request, fn):
        for inst in fn.idle:
            return Assign(inst)
        return SPAWN

    def on_idle(self, now_ms, instance, fn):
        return KeepAlive(60_000.0)


def test_a_failed_health_check_kills_the_nodes_instances_and_remove_node_forgets_it() -> None:
    async def main() -> None:
        p = await platform(SpawnEach())
        await p.run([(0.0, 0, "f", b"", None), (0.0, 1, "f", b"", None)])
        assert {p.outcomes[0].node, p.outcomes[1].node} == {"n1", "n2"}
        n1 = p.router.nodes[0]
        p.nodes["n1"].fail = unavailable()
        await p.router.pool.check(n1)
        assert not n1.alive and not n1.instances
        assert [i.node for i in p.router.functions["f"].instances.values()] == ["n2"]
        await p.run([(p.clock.now + 1, 2, "f", b"", None)])
        assert p.outcomes[2].node == "n2"
        await p.router.remove_node("n2")
        assert [n.name for n in p.router.nodes] == ["n1"] and not p.router.functions["f"].instances
        await p.run([(p.clock.now + 1, 3, "f", b"", None)])
        assert isinstance(p.outcomes[3], Exception) and p.outcomes[3].status == 503   # no live node
    run(main())


def test_the_instance_cap_and_a_full_node_are_429s() -> None:
    class NoEviction(SpawnEach):
        def evict(self, now_ms, need_mb, candidates):
            return []

    async def main() -> None:
        p = await platform(NoEviction(), nodes=("n1",), capacity_mb=512)
        p.deploy("g", {"memory_mb": 256, "max_instances": 1})
        await p.run([(0.0, 0, "g", b"", None), (0.0, 1, "g", b"", None)])
        assert p.outcomes[0].ok
        assert isinstance(p.outcomes[1], Throttled) and p.outcomes[1].reason == "concurrency"
        await p.run([(1.0, 2, "f", b"", None), (1.0, 3, "f", b"", None)])   # 256 x 3 > 512, none evicted
        assert p.outcomes[2].ok
        assert isinstance(p.outcomes[3], Throttled) and p.outcomes[3].reason == "capacity"
    run(main())


def test_a_policy_that_raises_is_answered_by_the_base_policy() -> None:
    class Broken(Policy):
        name = "broken"

        def route(self, now_ms, request, fn):
            raise ZeroDivisionError("oops")

    async def main() -> None:
        p = await platform(Broken(), nodes=("n1",))
        await p.run([(0.0, 0, "f", b"hi", None)])
        assert p.outcomes[0].ok and p.outcomes[0].output == b"hi"
        assert p.router.snapshot()["policy_fallbacks"] == {"route": 1}
    run(main())


def test_an_older_version_has_its_own_record_and_is_forgotten_with_its_function() -> None:
    from wlruntime.router.catalog import FunctionCatalog
    from wlruntime.router.state import Function

    forgotten: list[tuple[str, int]] = []
    catalog = FunctionCatalog("http://registry.invalid", None, on_update=lambda fn: None,
                              on_forget=lambda fn: forgotten.append((fn.name, fn.version)))
    latest = catalog.upsert("f", 3, {"memory_mb": 64})
    older = catalog.pinned[("f", 1)] = Function("f", 1, {"memory_mb": 32})

    async def main() -> None:
        assert await catalog.get_version("f", 3) is latest          # the latest: no record of its own
        assert await catalog.get_version("f", 1) is older           # loaded once, then reused
    run(main())
    catalog.forget("f")
    assert sorted(forgotten) == [("f", 1), ("f", 3)] and older.deleted and latest.deleted
    assert catalog.pinned == {} and catalog.functions == {}
