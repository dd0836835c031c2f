"""The wasmtime execution layer of a handler node.

- engine.py: the shared engines and the epoch ticker (timeouts),
- validate.py: ABI checks used at upload (registry) and before instantiation (node),
- cache.py: compiled-artifact cache (memory + disk, keyed by sha256 and engine fingerprint),
- runners.py: ABI 1 (WASI preview1 command) and ABI 2 (component) instances and invocation.

Nothing is imported here eagerly so importing ``wlruntime.wasm.validate`` stays cheap.
"""
