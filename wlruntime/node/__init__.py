"""The handler node: a gRPC server hosting wasm instances of registry functions.

Start one with ``python -m wlruntime.node --registry URL --port P --memory-mb M``, or in-process
with ``wlruntime.node.server.start_node(...)``; talk to it with ``wlruntime.node.client.connect``.

- runtime.py: instance table, lifecycle (spawn, invoke, keep-alive timers, kill), the
  scheduler conversation; no gRPC in it,
- server.py: node.proto's Node service on top of the runtime, the Scheduler caller,
- client.py: channel options (payloads up to 64 MB) and stubs,
- metrics.py: Prometheus metrics.

Concurrency: wasm runs on a pool of ``--workers`` threads, never on gRPC threads, so Status,
Health and KeepAlive answer while functions run. wasmtime releases the GIL while wasm executes,
so CPU-bound functions do run in parallel on several cores; the Python around each call (the
gRPC handler, building a WASI context and Store for ABI 1) holds the GIL, so for short functions
one node process is limited by the GIL rather than by cores. Measured numbers and the
node-per-core advice are in bench/node_quick.py's output and the issue report.
"""
