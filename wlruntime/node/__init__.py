"""The handler node: a gRPC server hosting wasm instances of registry functions.

Start one with ``python -m wlruntime.node --registry URL --port P --memory-mb M``, or in-process
with ``wlruntime.node.server.start_node(...)``; talk to it with ``wlruntime.node.client.connect``.

- runtime.py: instance table, lifecycle (spawn, invoke, keep-alive timers, kill), the
  scheduler conversation; no gRPC in it,
- server.py: node.proto's Node service on a grpc.aio server (one event loop), the Scheduler
  caller,
- client.py: channel options (payloads up to 64 MB) and stubs, and ``DoStreamClient``: ``Do``
  for asyncio callers over one ``DoStream`` per node, in batches (what the router uses),
- metrics.py: Prometheus metrics,
- quickbench.py: the node's own measurements (``--compare-with DIR`` against another tree).

Concurrency: the gRPC server runs on one asyncio event loop; KeepAlive, Kill, Status and Health
are answered there. ``DoStream`` carries many Do operations on one stream, in batches both ways
(a gRPC message costs a Python server about as much as a trivial function's whole run, and a
unary call more than twice that); replies go out as operations finish. Wasm runs on a pool of
``--workers`` threads (default max(4, 2 x cores)),
at most ``workers`` invocations at once (each on its own instance); wasmtime releases the GIL
while wasm executes, so long or CPU-bound invocations overlap (tests/test_node_runtime.py
checks that four run side by side). A thread hand-off there and back costs more than a trivial
function's whole run, so an ABI 1 invocation of a function without a filesystem is first run
on the event loop itself with a budget of 2 epoch ticks (2-4 ms): if it finishes, that is the
answer; if not, the attempt is dropped (a fresh Store per call and no files: it leaves no
trace) and the invocation runs again on the pool. Functions whose recent runs took more than
1 ms (a weighted mean of exec_ms) are not tried inline, so a slow function wastes one budget,
not one per call. Components (ABI 2) keep state, so they always run on the pool. The metric
``wl_node_inline_retries`` counts interrupted attempts.

Cache dir (``--cache-dir``, shared by the nodes of a host): ``code/`` fetched code by sha256,
``compiled/`` compiled artifacts (the registry can leave its own there, see
``registry.compiled_cache_dir``), ``meta/<registry id>/<name>@<version>.json`` the metadata of
immutable versions, so a new node process spawns a cached version without asking the registry
("latest" is always asked).

For short functions a node process is bound by the Python around each call (gRPC, the runtime,
setting up a Store); ``python -m wlruntime.node.quickbench --compare-with DIR`` measures it
against another tree in the same run (numbers in bench/README.md). Run one node per core.
"""
