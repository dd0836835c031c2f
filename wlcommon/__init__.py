"""Small helpers every wl package may use: ``policies``, ``wlmodel``, ``wlsim``, ``wlruntime``
and ``wl`` import it, it imports none of them (standard library only, heavy libraries only in
the module that needs them).

- ``wlcommon.files``: atomic file writes and secret token files.
- ``wlcommon.wasmtime_capi``: the few wasmtime C-API calls wasmtime-py does not wrap, in one
  place (imports wasmtime).
"""
