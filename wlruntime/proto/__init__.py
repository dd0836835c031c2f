"""Generated gRPC stubs for protos/node.proto (do not edit by hand).

Regenerate with ``python -m wlruntime.proto.generate``; tests/test_proto_stubs.py fails when
they are stale. Use them as::

    from wlruntime.proto import node_pb2, node_pb2_grpc
"""
