"""The handler node: a gRPC server hosting wasm instances of registry functions.

Start one with ``python -m wlruntime.node --registry URL --port P --memory-mb M``, or in-process
with ``wlruntime.node.server.start_node(...)``; talk to it with ``wlruntime.node.client.connect``.

- runtime.py: instance table, lifecycle (spawn, invoke, keep-alive timers, kill), the
  scheduler conversation; no gRPC in it,
- server.py: node.proto's Node service on top of the runtime, the Scheduler caller,
- client.py: channel options (payloads up to 64 MB) and stubs,
- metrics.py: Prometheus metrics.

Concurrency: wasm runs on a pool of ``--workers`` threads (default max(4, 2 x cores)), never
on gRPC threads, so Status, Health and KeepAlive answer while functions run, and at most
``workers`` invocations execute at once (each on its own instance). wasmtime releases the GIL
while wasm executes, so long or CPU-bound invocations overlap (tests/test_node_runtime.py checks
that four run side by side). The Python around each call (gRPC handler, WASI context and Store
for ABI 1, about 0.1-0.3 ms) holds the GIL, so for short functions one node process is
GIL-bound: ``python -m wlruntime.node.quickbench`` measured ~650-750 echo invocations/s for one
node at any client concurrency and ~800-1,200/s for two nodes on this 2-core machine (under
heavy load from other work). For CPU-bound functions one node could in principle use every
core, but the same run could not show it (cpu_work n=2000: one node 75-96/s, two nodes
105-135/s). So: run one node per core.
"""
