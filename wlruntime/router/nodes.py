"""The router's node pool: which handler nodes exist, whether they are healthy, and what
happens when one fails or leaves.

A ``NodeRef`` is the model's ``Node`` (memory accounting, its instances; placement is the
model's rule, ``wlmodel.platform.Platform.choose_node``) plus the way to call it: a gRPC
channel, the ``Node`` stub and a ``DoStreamClient`` for Do operations. Tests may build
NodeRefs with an in-process transport instead (``NodeRef(address, transport=...)``).

Health: a refused connection marks a node dead at once; a slow answer only after
``HEALTH_MISSES`` in a row (a node busy compiling a large component answers late). A dead
node's instances die in the model (requests queued there are routed again; requests running
there get their error from their own failing call); the health loop re-admits it when it
answers again, freeing what it holds that the router does not know.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from wlmodel.records import Node
from wlruntime.node.client import DoStreamClient, aio_node_stub
from wlruntime.proto import node_pb2 as pb
from wlruntime.router.dispatch import CONTROL_TIMEOUT_S, Dispatch
from wlruntime.router.state import NODE_ERROR, Result

log = logging.getLogger("wlruntime.router")

# gRPC: large payloads, and quick reconnects to a node that comes back.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
HEALTH_MISSES = 5            # consecutive health-check timeouts that mark a node dead


class NodeRef(Node):
    """The router's record of one handler node (see the module docstring). ``transport``:
    an object with ``stub`` and ``calls`` (and ``close()``), default a real gRPC channel."""

    __slots__ = ("calls", "channel", "failures", "last_error", "misses", "pending_kills", "stub")

    def __init__(self, address: str, transport: Any = None) -> None:
        super().__init__(address, 0.0, address=address, alive=False)
        if transport is None:
            self.channel, self.stub = aio_node_stub(address, CHANNEL_OPTIONS)  # calls carry the token
            self.calls = DoStreamClient(self.stub)  # Do operations, over one stream
        else:
            self.channel = transport
            self.stub = transport.stub
            self.calls = transport.calls
        self.last_error = "not contacted yet"
        self.misses = 0
        self.failures = 0       # times marked failed (wl_router_node_failures_total)
        self.pending_kills: set[asyncio.Task] = set()   # Kill calls in flight (a spawn waits for them)

    async def close(self) -> None:
        await self.calls.close()
        await self.channel.close(grace=0.5)


class NodePool:
    """Health, admission, failure and membership of the nodes (the model's ``nodes``)."""

    def __init__(self, dispatch: Dispatch, node_factory: Callable[[str], NodeRef] = NodeRef) -> None:
        self.dispatch = dispatch
        self.node_factory = node_factory

    @property
    def nodes(self) -> list[NodeRef]:
        return self.dispatch.nodes  # type: ignore[return-value]

    def find(self, address: str) -> NodeRef | None:
        return next((n for n in self.nodes if address in (n.address, n.name)), None)

    async def add(self, address: str) -> NodeRef:
        node = self.find(address)
        if node is not None:
            return node
        node = self.dispatch.add_node(self.node_factory(address))
        await self.check(node)
        return node

    async def remove(self, address: str) -> NodeRef | None:
        """Take a node out of the pool: its instances die (requests queued there are placed
        again; running ones get their error), it is told to free them, then forgotten."""
        node = self.find(address)
        if node is None:
            return None
        ids = [i.instance_id for i in node.instances.values()]
        self._fail(node, "removed from the pool")
        self.dispatch.remove_node(node, self.dispatch.clock.now_ms())
        for iid in ids:
            try:
                await node.calls.do(pb.DoRequest(instance_id=iid, kill=pb.Kill()), timeout=CONTROL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                pass  # it may be gone already
        await node.close()
        log.info("node %s (%s) removed", node.name, node.address)
        return node

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()

    async def health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            await asyncio.gather(*(self.check(n) for n in self.nodes), return_exceptions=True)

    async def check(self, node: NodeRef) -> None:
        try:
            await node.stub.Health(pb.HealthRequest(), timeout=HEALTH_TIMEOUT_S)
            node.misses = 0
            if not node.alive:
                await self._sync(node)
        except grpc.aio.AioRpcError as error:
            node.last_error = f"{error.code().name}: {error.details()}"
            node.misses += 1
            if node.alive and (error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED or node.misses >= HEALTH_MISSES):
                self.failed(node, f"health check failed: {node.last_error}")

    async def _sync(self, node: NodeRef) -> None:
        """(Re)admit a node: learn its capacity and free what it holds that the router does not know."""
        status = await node.stub.Status(pb.StatusRequest(), timeout=CONTROL_TIMEOUT_S)
        if not node.instances:
            node.name = status.node_id or node.address
        node.capacity_mb = float(status.memory_capacity_mb)
        orphans = [i for i in status.instances if i.instance_id not in self.dispatch.by_iid]
        for info in orphans:
            try:
                await node.calls.do(pb.DoRequest(instance_id=info.instance_id, kill=pb.Kill()),
                                    timeout=CONTROL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                pass
        node.used_mb = sum(i.memory_mb for i in node.instances.values())
        node.alive = True
        node.last_error = ""
        log.info("node %s (%s) is up: %g MB, %d orphan instance(s) freed", node.name, node.address,
                 node.capacity_mb, len(orphans))

    def failed(self, node: Any, why: str) -> None:
        """Mark a node and all its instances dead; requests queued there are placed again.
        Requests running there get their error from their own failing RPC."""
        if not node.alive:
            return
        log.warning("node %s (%s) failed: %s; %d instance(s) marked dead", node.name, node.address, why,
                    len(node.instances))
        self._fail(node, why)

    def _fail(self, node: Any, why: str) -> None:
        d = self.dispatch
        node.last_error = why
        node.failures += 1
        for rid, (inst, req) in list(d.node_driven.items()):
            if inst.node_ref is node:
                del d.node_driven[rid]
                d._answer(req, Result(error=NODE_ERROR, error_message=f"node {node.name} failed: {why}",
                                      cold=req.cold, node=node.name, instance=inst.instance_id))
        d.node_failed(node, d.clock.now_ms())
