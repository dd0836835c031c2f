"""Connecting to nodes (and schedulers) over gRPC with the options wl needs.

    from wlruntime.node.client import connect
    from wlruntime.proto import node_pb2 as pb

    channel, node = connect("127.0.0.1:7800")
    spawned = node.Spawn(pb.SpawnRequest(function="echo"))
    reply = node.Do(pb.DoRequest(instance_id=spawned.instance_id, invoke=pb.Invoke(payload=b"hi")))
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Sequence
from heapq import heappop, heappush
from typing import Any

import grpc

from wlruntime.auth import InternalAuth
from wlruntime.proto import node_pb2, node_pb2_grpc

# Payloads reach several MB (max_payload_bytes defaults to 6 MiB): raise gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def connect(address: str, auth: InternalAuth | None = None) -> tuple[grpc.Channel, node_pb2_grpc.NodeStub]:
    """A channel to a node at ``host:port`` and its stub; close the channel when done. Calls carry
    the internal token (``auth``, default: from the environment, see wlruntime/auth.py)."""
    channel = (auth or InternalAuth.from_env()).channel(address, CHANNEL_OPTIONS)
    return channel, node_pb2_grpc.NodeStub(channel)


def connect_scheduler(address: str,
                      auth: InternalAuth | None = None) -> tuple[grpc.Channel, node_pb2_grpc.SchedulerStub]:
    channel = (auth or InternalAuth.from_env()).channel(address, CHANNEL_OPTIONS)
    return channel, node_pb2_grpc.SchedulerStub(channel)

def aio_node_stub(address: str, options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
                  auth: InternalAuth | None = None) -> tuple[grpc.aio.Channel, node_pb2_grpc.NodeStub]:
    """A grpc.aio channel to a node and its stub, every call carrying the internal token (``auth``,
    default: from the environment). The token goes in each call's metadata rather than through a
    client interceptor (``InternalAuth.aio_channel``): grpc.aio runs an intercepted stream's writes
    through a queue and a task of its own, per message, which the DoStream hot path would pay on
    every request. TLS is as ``auth`` configures it."""
    auth = auth or InternalAuth.from_env()
    channel = dataclasses.replace(auth, token=None).aio_channel(address, options)  # no interceptor
    stub = node_pb2_grpc.NodeStub(channel)
    if auth.metadata:
        for name, method in vars(stub).items():  # the stub's multicallables: Spawn, Do, DoStream, ...
            setattr(stub, name, functools.partial(method, metadata=auth.metadata))
    return channel, stub


# A call's DEADLINE_EXCEEDED comes at most this much after its deadline (the stream's one
# deadline timer wakes up at most this often while calls are in flight).
DEADLINE_SLACK_S = 0.05

# A DoStream batch carries at most about this many payload bytes (more than one message only
# when they fit), so batches stay far below the message limit however busy the stream is.
BATCH_BYTES = 1024 * 1024


def take_batch(outbox: list[tuple[Any, int]]) -> list[Any]:
    """Remove and return the first messages of ``outbox`` ((message, payload bytes) pairs, at
    least one) whose payloads fit in ``BATCH_BYTES`` together."""
    size = 0
    for n, (_, nbytes) in enumerate(outbox):
        size += nbytes
        if n and size > BATCH_BYTES:
            break
    else:
        n = len(outbox)
    batch = [message for message, _ in outbox[:n]]
    del outbox[:n]
    return batch


class DoStreamClient:
    """``Node.Do`` for an asyncio caller, multiplexed over one ``DoStream`` (see node.proto).

        calls = DoStreamClient(node_pb2_grpc.NodeStub(grpc.aio.insecure_channel(address)))
        reply = await calls.do(pb.DoRequest(instance_id=..., invoke=pb.Invoke(payload=b"hi")), timeout=5)

    Many coroutines may call ``do`` at once; each gets its own reply. Failures raise
    ``grpc.aio.AioRpcError`` with the status unary ``Do`` would have given, so callers handle
    both the same way: an error the node reports for one operation fails that call only; a
    broken stream (the node died) fails every call in flight on it with UNAVAILABLE, and the
    next call opens a new stream. Requests that pile up while a batch is being written go out
    together in the next one. A node without DoStream (UNIMPLEMENTED) gets unary calls from
    then on; so do payloads of ``unary_from_bytes`` or more, which would otherwise hold up the
    shared stream while they are sent.
    """

    unary_from_bytes = 256 * 1024

    def __init__(self, stub: node_pb2_grpc.NodeStub) -> None:
        self._stub = stub
        self._stream: _Stream | None = None
        self._next_id = 0
        self.streaming = True  # False once the node turned out not to implement DoStream
        self.spawn_as_do = True  # False once the node turned out to predate DoRequest.spawn

    async def do(self, request: Any, timeout: float, payload_bytes: int | None = None) -> Any:
        """Carry out ``request`` (a DoRequest; its call_id is set here) within ``timeout`` seconds
        (on the stream, DEADLINE_EXCEEDED comes up to DEADLINE_SLACK_S after it).
        ``payload_bytes``: the size of its Invoke payload when the caller knows it (read from the
        message otherwise, which copies the payload)."""
        if payload_bytes is None:
            payload_bytes = len(request.invoke.payload) if request.HasField("invoke") else 0
        if not self.streaming or payload_bytes >= self.unary_from_bytes:
            return await self._stub.Do(request, timeout=timeout)
        try:
            reply = await self._do_streamed(request, timeout, payload_bytes)
        except grpc.aio.AioRpcError as error:
            # The node refused the stream itself (nothing ran; _ended switched to unary calls):
            # the call that opened it hears UNIMPLEMENTED, those queued behind it "not sent".
            if error.code() is not grpc.StatusCode.UNIMPLEMENTED and not (never_sent(error) and not self.streaming):
                raise
            return await self._stub.Do(request, timeout=timeout)
        if reply.error_code:
            code = getattr(grpc.StatusCode, reply.error_code, grpc.StatusCode.UNKNOWN)
            raise _status(code, reply.error_message)
        return reply

    def in_order(self, payload_bytes: int = 0) -> bool:
        """Whether a spawn whose request has a payload of ``payload_bytes`` would go on the
        stream now, behind everything sent on it before: the node reads a stream's requests in
        order and carries out the quick ones (keep-alive, kill, claiming an instance, reserving
        a spawn's memory) as it reads them."""
        return self.streaming and self.spawn_as_do and payload_bytes < self.unary_from_bytes

    async def spawn(self, request: Any, timeout: float) -> Any:
        """``Node.Spawn(request)`` (a SpawnRequest naming its instance_id) as one Do operation on
        the stream: the SpawnReply, or AioRpcError with the status Spawn would have given. A burst
        of spawns then goes out in a few batches, where unary calls were accepted by the node one
        at a time (~1 ms each: the last cold start of a burst of 100 waited ~100 ms for the others)."""
        if not self.spawn_as_do:
            return await self._stub.Spawn(request, timeout=timeout)
        payload_bytes = len(request.invoke.payload) if request.HasField("invoke") else 0
        try:
            reply = await self.do(node_pb2.DoRequest(instance_id=request.instance_id, spawn=request), timeout,
                                  payload_bytes)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.INVALID_ARGUMENT or error.details() != NO_SPAWN_OP:
                raise
            self.spawn_as_do = False  # a node older than DoRequest.spawn: it ran nothing
            return await self._stub.Spawn(request, timeout=timeout)
        return reply.spawn

    async def _do_streamed(self, request: Any, timeout: float, payload_bytes: int) -> Any:
        stream = self._stream
        if stream is None:
            stream = self._stream = _Stream(self._stub.DoStream(), self)
        self._next_id += 1
        call_id = request.call_id = self._next_id
        future = stream.pending[call_id] = stream.loop.create_future()
        stream.watch(call_id, timeout)
        stream.send(request, payload_bytes)
        try:
            return await future
        finally:
            stream.pending.pop(call_id, None)

    def _ended(self, stream: _Stream) -> None:
        if self._stream is stream:
            self._stream = None
        if stream.ended is not None and stream.ended.code() is grpc.StatusCode.UNIMPLEMENTED:
            self.streaming = False

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.call.cancel()


class _Stream:
    """One open DoStream: the calls in flight on it, and the tasks writing their requests (in
    batches) and reading their replies."""

    def __init__(self, call: Any, owner: DoStreamClient) -> None:
        self.call = call
        self.owner = owner
        # The stream's loop, looked up once: asyncio.get_running_loop() costs a getpid() system
        # call per use on Python 3.11, and a request used it twice.
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future] = {}
        self.outbox: list[tuple[Any, int]] = []  # (DoRequest, payload bytes)
        self.ready = asyncio.Event()
        self.ended: grpc.aio.AioRpcError | None = None
        # The calls' deadlines, one loop timer for them all (a timer set and cancelled per call
        # cost ~2 µs each); answered calls' entries are dropped when they reach the front.
        self.deadlines: list[tuple[float, int]] = []   # heap of (loop time, call id)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timed_at = math.inf
        self.reader = asyncio.ensure_future(self._read_replies())
        self.writer = asyncio.ensure_future(self._write_requests())

    def send(self, request: Any, payload_bytes: int) -> None:
        self.outbox.append((request, payload_bytes))
        self.ready.set()

    async def _write_requests(self) -> None:
        outbox = self.outbox
        try:
            while True:
                if not outbox:
                    self.ready.clear()
                    await self.ready.wait()
                    continue
                # One turn of the event loop first: requests arriving in the same turn join
                # this batch (about 2x fewer, bigger writes under load; no timed wait).
                await asyncio.sleep(0)
                # gRPC allows one outstanding write per call
                batch = take_batch(outbox)
                try:
                    await self.call.write(node_pb2.DoBatch(requests=batch))
                except asyncio.CancelledError:
                    raise       # the stream ended meanwhile: these may have gone out (fate unknown)
                except BaseException:
                    # A write gRPC refused (the call had ended): a node cannot have run a message
                    # it did not receive whole, so the batch goes back to be failed as not sent.
                    outbox[:0] = [(request, 0) for request in batch]
                    raise
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - the stream broke: end it, so every caller hears now
            self._end(error if isinstance(error, grpc.aio.AioRpcError)
                      else _status(grpc.StatusCode.UNAVAILABLE, f"the node's DoStream ended: {error!r}"))
            self.call.cancel()

    async def _read_replies(self) -> None:
        try:
            while (batch := await self.call.read()) is not grpc.aio.EOF:
                pending = self.pending
                for reply in batch.replies:
                    future = pending.get(reply.call_id)
                    if future is not None and not future.done():
                        future.set_result(reply)
            self._end(_status(grpc.StatusCode.UNAVAILABLE, "the node ended its DoStream"))
        except grpc.aio.AioRpcError as error:
            self._end(error)
        except BaseException as error:  # cancelled (shutting down): callers must not hang either
            self._end(_status(grpc.StatusCode.UNAVAILABLE, f"DoStream stopped: {error!r}"))
            raise

    def _end(self, error: grpc.aio.AioRpcError) -> None:
        if self.ended is None:
            self.ended = error
            self.owner._ended(self)
            self.writer.cancel()
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
        # Requests still in the outbox were never handed to gRPC: the node surely did not run
        # them, so the caller may place them elsewhere (the others' fate is unknown).
        unsent = _status(grpc.StatusCode.UNAVAILABLE, f"{NOT_SENT}: {self.ended.details()}")
        for request, _ in self.outbox:
            future = self.pending.get(request.call_id)
            if future is not None and not future.done():
                future.set_exception(unsent)
        self.outbox.clear()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(self.ended)

    def watch(self, call_id: int, timeout: float) -> None:
        """Fail call ``call_id`` with DEADLINE_EXCEEDED if unanswered after ``timeout`` seconds
        (up to DEADLINE_SLACK_S later while the stream is busy)."""
        loop = self.loop
        at = loop.time() + timeout
        heappush(self.deadlines, (at, call_id))
        if at < self._timed_at:
            self._time(loop, at)

    def _time(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._timed_at = at
        self._deadline_timer = loop.call_at(at, self._deadlines_due)

    def _deadlines_due(self) -> None:
        self._deadline_timer, self._timed_at = None, math.inf
        loop = self.loop
        now = loop.time()
        deadlines, pending = self.deadlines, self.pending
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1] not in pending):
            self.expire(heappop(deadlines)[1])     # nothing happens to an answered call
        if deadlines:   # at most one wake-up per DEADLINE_SLACK_S however many calls
            self._time(loop, max(deadlines[0][0], now + DEADLINE_SLACK_S))

    def expire(self, call_id: int) -> None:
        future = self.pending.get(call_id)
        if future is not None and not future.done():
            future.set_exception(_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


# What a node older than DoRequest.spawn answers a spawn operation with (it sees no operation).
NO_SPAWN_OP = "DoRequest needs one of keep_alive, kill, invoke"

# The details of a call's UNAVAILABLE when its request was never written to the node.
NOT_SENT = "not sent, the node's DoStream had ended"


def never_sent(error: grpc.aio.AioRpcError) -> bool:
    """The call failed before its request left the router (see _Stream._end)."""
    return error.code() is grpc.StatusCode.UNAVAILABLE and (error.details() or "").startswith(NOT_SENT)


def _status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
