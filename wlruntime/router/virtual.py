"""The real router on virtual time: a virtual clock and an in-process node transport.

``VirtualClock`` is the router's Clock whose timers fire only when the caller says so (in
time order, then the model's order at one instant). ``InProcessNode`` stands in for a node's
gRPC service (Spawn, Do, Health, Status): it answers each call after virtual time passes, a
spawn after ``cold_start_ms(function)`` and an execution after ``duration_ms(request)``.
``VirtualPlatform`` puts a Router on both; ``run(arrivals)`` replays arrivals as the
simulator would (events at an instant before arrivals at it). The parity test
(tests/test_parity.py) and the router's unit tests use it; nothing here opens a socket.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from heapq import heappop, heappush
from typing import Any

from wlruntime.proto import node_pb2 as pb
from wlruntime.router.core import Router
from wlruntime.router.nodes import NodeRef
from wlruntime.router.state import Function, RouterError


class VirtualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """The router's Clock on virtual time (ms)."""

    def __init__(self, start_ms: float = 0.0) -> None:
        self.now = start_ms
        self._heap: list[tuple[float, tuple, int, VirtualTimer]] = []
        self._seq = 0

    def now_ms(self) -> float:
        return self.now

    def call_at(self, at_ms: float, callback: Callable[[], Any], order: tuple = (1,)) -> VirtualTimer:
        timer = VirtualTimer(callback)
        self._seq += 1
        heappush(self._heap, (max(at_ms, self.now), order, self._seq, timer))
        return timer

    def sleep_until(self, at_ms: float) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.call_at(at_ms, lambda: future.done() or future.set_result(None))
        return future

    def next_time(self) -> float:
        while self._heap and self._heap[0][3].cancelled:
            heappop(self._heap)
        return self._heap[0][0] if self._heap else math.inf

    def fire_next(self) -> None:
        at, _, _, timer = heappop(self._heap)
        self.now = at
        timer.callback()


class InProcessNode:
    """A node's gRPC service in-process on a VirtualClock. ``duration_ms(invoke)`` gives an
    execution's length (an ``pb.Invoke``), ``cold_start_ms(function)`` a spawn's. ``fail``
    set to a ``grpc.aio.AioRpcError`` makes every later call fail with it (a dead node)."""

    def __init__(self, name: str, clock: VirtualClock, capacity_mb: float,
                 duration_ms: Callable[[pb.Invoke], float], cold_start_ms: Callable[[str], float]) -> None:
        self.name = name
        self.clock = clock
        self.capacity_mb = capacity_mb
        self.duration_ms = duration_ms
        self.cold_start_ms = cold_start_ms
        self.stub = self
        self.calls = self
        self.fail: Exception | None = None
        self.log: list[tuple[float, str, str]] = []    # (time, operation, instance id)

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def Health(self, request: Any, timeout: float | None = None) -> pb.HealthReply:
        self._check()
        return pb.HealthReply(ok=True, node_id=self.name)

    async def Status(self, request: Any, timeout: float | None = None) -> pb.StatusReply:
        self._check()
        return pb.StatusReply(node_id=self.name, memory_capacity_mb=int(self.capacity_mb))

    async def Spawn(self, request: pb.SpawnRequest, timeout: float | None = None) -> pb.SpawnReply:
        self._check()
        self.log.append((self.clock.now, "spawn", request.instance_id))
        ready = self.clock.now + self.cold_start_ms(request.function)
        reply = pb.SpawnReply(instance_id=request.instance_id, function=request.function)
        if request.HasField("invoke"):
            d = self.duration_ms(request.invoke)
            await self.clock.sleep_until(ready + d)
            self._check()
            reply.invoke.CopyFrom(pb.InvokeResult(request_id=request.invoke.request_id, exec_ms=d,
                                                  output=request.invoke.payload))
        else:
            await self.clock.sleep_until(ready)
            self._check()
        return reply

    async def spawn(self, request: pb.SpawnRequest, timeout: float | None = None) -> pb.SpawnReply:
        return await self.Spawn(request, timeout)   # DoStreamClient.spawn's place

    def in_order(self, payload_bytes: int = 0) -> bool:
        return False    # calls are independent here: a spawn waits for the kills before it

    async def do(self, request: pb.DoRequest, timeout: float | None = None, size: int = 0) -> pb.DoReply:
        self._check()
        op = request.WhichOneof("op")
        self.log.append((self.clock.now, op, request.instance_id))
        if op == "invoke":
            d = self.duration_ms(request.invoke)
            await self.clock.sleep_until(self.clock.now + d)
            self._check()
            return pb.DoReply(instance_id=request.instance_id, invoke=pb.InvokeResult(
                request_id=request.invoke.request_id, exec_ms=d, output=request.invoke.payload))
        return pb.DoReply(instance_id=request.instance_id)

    async def close(self, grace: float | None = None) -> None:
        return None


async def settle(rounds: int = 40) -> None:
    """Let every runnable task run until all wait on the virtual clock."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class VirtualPlatform:
    """A Router with ``nodes`` InProcessNodes on one VirtualClock (use inside a running loop:
    ``await VirtualPlatform.create(...)``)."""

    def __init__(self, router: Router, clock: VirtualClock, nodes: dict[str, InProcessNode]) -> None:
        self.router = router
        self.clock = clock
        self.nodes = nodes
        self.outcomes: dict[Any, Any] = {}
        self._tasks: list[asyncio.Task] = []

    @classmethod
    async def create(cls, policy: Any, node_names: Iterable[str], capacity_mb: float,
                     duration_ms: Callable[[pb.Invoke], float], cold_start_ms: Callable[[str], float],
                     start_ms: float = 0.0) -> VirtualPlatform:
        clock = VirtualClock(start_ms)
        nodes: dict[str, InProcessNode] = {}

        def factory(address: str) -> NodeRef:
            nodes[address] = InProcessNode(address, clock, capacity_mb, duration_ms, cold_start_ms)
            return NodeRef(address, nodes[address])

        router = Router(registry_url="http://registry.invalid", nodes=list(node_names), policy=policy,
                        clock=clock, node_factory=factory)
        await router.start(background=False)
        return cls(router, clock, nodes)

    def deploy(self, name: str, config: dict[str, Any], version: int = 1) -> Function:
        """A deployed function, as the registry would describe it (no registry involved)."""
        fn = self.router.functions[name] = Function(name, version, config)
        return fn

    def submit(self, key: Any, name: str, payload: bytes = b"", metadata: dict[str, str] | None = None) -> None:
        """A request arrives now; its Result (or RouterError) lands in ``outcomes[key]``."""
        async def one() -> None:
            try:
                self.outcomes[key] = await self.router.invoke(name, payload, metadata)
            except RouterError as error:
                self.outcomes[key] = error
        self._tasks.append(asyncio.get_running_loop().create_task(one()))

    async def advance(self, until_ms: float) -> None:
        """Fire every timer due up to ``until_ms`` (inclusive), then stand at ``until_ms``."""
        while True:
            await settle()
            if self.clock.next_time() > until_ms:
                break
            self.clock.fire_next()
        self.clock.now = max(self.clock.now, until_ms)
        await settle()

    async def run(self, arrivals: Iterable[tuple[float, Any, str, bytes, dict[str, str] | None]]) -> None:
        """Replay ``(time, key, function, payload, metadata)`` arrivals and wait until every
        request is answered (timers at an instant fire before arrivals at it)."""
        for t, key, name, payload, metadata in arrivals:
            while True:
                await settle()
                if self.clock.next_time() > t:
                    break
                self.clock.fire_next()
            self.clock.now = float(t)
            self.submit(key, name, payload, metadata)
        while True:
            await settle()
            if all(task.done() for task in self._tasks):
                break
            if self.clock.next_time() == math.inf:
                raise RuntimeError("requests still waiting and no timer left")
            self.clock.fire_next()
        await asyncio.gather(*self._tasks)
