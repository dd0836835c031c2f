"""The wl router: HTTP invoke API (wl's and AWS Lambda's), the instance table across handler
nodes, the shared policies deciding live, Scheduler.OnIdle for the nodes, /metrics, /admin.

    python -m wlruntime.router --registry http://127.0.0.1:7700 --node 127.0.0.1:7710 --policy default

For embedding: ``Router`` (core.py) and ``create_app`` (server.py).
"""

from __future__ import annotations

__all__ = ["Router", "create_app"]


def __getattr__(name: str):  # lazy: `import wlruntime.router` stays cheap
    if name == "Router":
        from wlruntime.router.core import Router
        return Router
    if name == "create_app":
        from wlruntime.router.server import create_app
        return create_app
    raise AttributeError(name)
