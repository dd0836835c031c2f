"""The router's HTTP modules, assembled into one ASGI app by ``wlruntime.router.server``:
invoke.py (hot paths), lambda_api.py (Lambda control plane), events.py (durable Event
queue), admin.py (/admin), uploaded.py (uploaded routing code), wire.py (shared helpers)."""
