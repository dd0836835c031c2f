"""The wl code registry: a FastAPI service storing function code (content-addressed by
sha256) and versioned configs (SQLite), plus its HTTP client.

Importing this package stays light: the server (``wlruntime.registry.server``) is imported
only by whoever runs it.
"""

from wlruntime.registry.client import FetchedCode, RegistryClient, RegistryError

__all__ = ["FetchedCode", "RegistryClient", "RegistryError"]
