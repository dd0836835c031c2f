"""Connecting to nodes (and schedulers) over gRPC with the options wl needs.

    from wlruntime.node.client import connect
    from wlruntime.proto import node_pb2 as pb

    channel, node = connect("127.0.0.1:7800")
    spawned = node.Spawn(pb.SpawnRequest(function="echo"))
    reply = node.Do(pb.DoRequest(instance_id=spawned.instance_id, invoke=pb.Invoke(payload=b"hi")))
"""

from __future__ import annotations

import grpc

from wlruntime.proto import node_pb2_grpc

# Payloads reach several MB (max_payload_bytes defaults to 6 MiB): raise gRPC's 4 MB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def connect(address: str) -> tuple[grpc.Channel, node_pb2_grpc.NodeStub]:
    """An insecure channel to a node at ``host:port`` and its stub; close the channel when done."""
    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return channel, node_pb2_grpc.NodeStub(channel)


def connect_scheduler(address: str) -> tuple[grpc.Channel, node_pb2_grpc.SchedulerStub]:
    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return channel, node_pb2_grpc.SchedulerStub(channel)
