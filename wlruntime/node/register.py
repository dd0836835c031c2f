"""A node that registers itself with the router instead of being in its static node list.

``python -m wlruntime.node --register http://router:7701 --advertise 10.0.0.7:7710`` posts
``{"address": "<advertise>"}`` to the router's ``POST /admin/nodes`` (Authorization: Bearer
<admin token>) as soon as the node serves, then again every ``interval_s``: the router's
``add`` is idempotent, so a repeat costs one health probe, and a router that restarted (and
forgot its nodes) or was not up yet learns of the node within one interval. A node that
goes away is noticed by the router's health checks (wlruntime.router.nodes: marked dead,
its queued requests placed again); forgetting it for good is the router's
``Router.remove_node`` (no HTTP endpoint for it yet, so a node does not deregister itself
on shutdown).
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import quote

import httpx

log = logging.getLogger("wlruntime.node.register")

DEFAULT_INTERVAL_S = 30.0
TIMEOUT_S = 10.0


class Registrar:
    """Keeps one node registered with one router from a daemon thread."""

    def __init__(self, router_url: str, address: str, admin_token: str | None,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        if not router_url.startswith(("http://", "https://")):
            raise ValueError(f"--register needs the router's URL (http://HOST:PORT), got {router_url!r}")
        self.url = router_url.rstrip("/") + "/admin/nodes"
        self.address = address
        self.headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self.interval_s = interval_s
        self.registered = threading.Event()     # set after the first accepted registration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wl-node-register", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def deregister(self) -> bool:
        """Stop re-registering and tell the router this node is leaving (``DELETE
        /admin/nodes/{address}``), so it stops placing work here before the node goes. True
        when the router removed it (or no longer knew it); failures are logged, not raised."""
        self.stop()
        try:
            r = httpx.delete(f"{self.url}/{quote(self.address, safe='')}", headers=self.headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as e:
            log.warning("could not deregister %s from %s: %s", self.address, self.url, e)
            return False
        if r.status_code >= 400 and r.status_code != 404:
            log.warning("router %s answered %d deregistering %s: %s", self.url, r.status_code, self.address,
                        r.text[:200])
            return False
        log.info("deregistered %s from %s", self.address, self.url)
        return True

    def register_once(self) -> bool:
        """One POST; True when the router accepted the node. Failures are logged, not raised:
        the router may come up after the node."""
        try:
            r = httpx.post(self.url, json={"address": self.address}, headers=self.headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as e:
            log.warning("could not register %s with %s: %s", self.address, self.url, e)
            return False
        if r.status_code == 401:
            log.error("router %s refused the admin token (401): set --admin-token or WL_ROUTER_ADMIN_TOKEN",
                      self.url)
            return False
        if r.status_code >= 400:
            log.warning("router %s answered %d registering %s: %s", self.url, r.status_code, self.address,
                        r.text[:200])
            return False
        if not self.registered.is_set():
            log.info("registered %s with %s", self.address, self.url)
        self.registered.set()
        return True

    def _loop(self) -> None:
        # Quickly at first (the router may still be starting), then every interval.
        delay = 0.0
        while not self._stop.wait(delay):
            ok = self.register_once()
            delay = self.interval_s if ok else min(self.interval_s, max(1.0, 2 * delay))
