"""Asynchronous (``InvocationType: Event``) invocations, queued durably in SQLite.

Lambda's contract, kept here: the caller gets 202 once the event is stored; the event runs
soon after; a **function error** (the function failed or timed out) is retried twice, after
``retry_delays_s`` (Lambda: about 1 and 2 minutes); throttles, a node failing mid-request and
an unreachable registry are retried with backoff until the event is ``max_age_s`` old (Lambda:
6 hours); an event whose function was deleted is dropped. Events that used up their attempts
are kept as ``failed`` (Lambda would hand them to a dead-letter destination) and listed by
``GET /admin/events``.

The queue lives in ``<state dir>/events.db``: events accepted before a router restart run
after it, with their attempt counts. Without a state dir it is an in-memory database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wlruntime.router.core import Router
from wlruntime.router.http.invocations import InvocationLog
from wlruntime.router.state import NODE_ERROR, OK, RouterError, Throttled

log = logging.getLogger("wlruntime.router.events")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT    NOT NULL,
    function    TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    features    TEXT,
    created_at  REAL    NOT NULL,
    next_at     REAL    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    status      TEXT    NOT NULL DEFAULT 'pending',
    last_error  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_due ON events (status, next_at);
"""
LAMBDA_RETRY_DELAYS_S = (60.0, 120.0)
LAMBDA_MAX_AGE_S = 6 * 3600.0
SYSTEM_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class EventQueue:
    def __init__(self, router: Router, path: Path | None, *,
                 retry_delays_s: Sequence[float] = LAMBDA_RETRY_DELAYS_S, max_age_s: float = LAMBDA_MAX_AGE_S,
                 max_in_flight: int = 32, invocations: InvocationLog | None = None) -> None:
        self.router = router
        self.invocations = invocations
        self.path = path
        self.retry_delays_s = tuple(retry_delays_s)
        self.max_age_s = max_age_s
        self.max_in_flight = max_in_flight
        self.counts = {"enqueued": 0, "succeeded": 0, "retried": 0, "failed": 0, "dropped": 0}
        self._db: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None
        self._system_retries: dict[int, int] = {}

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the event loop only: each statement is a small indexed
        # write or read, cheaper than a thread hop.
        db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", isolation_level=None)
        db.row_factory = sqlite3.Row
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash
        db.executescript(SCHEMA)
        self._db = db
        pending = db.execute("SELECT COUNT(*) FROM events WHERE status = 'pending'").fetchone()[0]
        if pending:
            log.info("%d queued Event invocation(s) from before the restart will run", pending)
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="router-events")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- API ------------------------------------------------------------------------------
    async def enqueue(self, function: str, payload: bytes, features: dict[str, float] | None,
                      request_id: str) -> None:
        assert self._db is not None, "the event queue is not started"
        now = time.time()
        self._db.execute("INSERT INTO events (request_id, function, payload, features, created_at, next_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (request_id, function, payload, json.dumps(features) if features else None, now, now))
        self.counts["enqueued"] += 1
        self._wake.set()

    def describe(self, limit: int = 20) -> dict[str, Any]:
        """Counts since start, what is queued, and the most recent failed events."""
        assert self._db is not None
        by_status = dict(self._db.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall())
        failed = [{"request_id": r["request_id"], "function": r["function"], "attempts": r["attempts"],
                   "error": r["last_error"], "created_at": r["created_at"]}
                  for r in self._db.execute("SELECT * FROM events WHERE status = 'failed' ORDER BY id DESC LIMIT ?",
                                            (limit,))]
        return {"pending": by_status.get("pending", 0), "failed": by_status.get("failed", 0),
                "in_flight": len(self._in_flight), "since_start": dict(self.counts), "recent_failures": failed}

    # ---- worker ---------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._db is not None
        while True:
            self._wake.clear()
            room = self.max_in_flight - len(self._in_flight)
            now = time.time()
            rows = []
            if room > 0:
                rows = self._db.execute(
                    "SELECT * FROM events WHERE status = 'pending' AND next_at <= ? ORDER BY next_at LIMIT ?",
                    (now, room + len(self._in_flight))).fetchall()
            for row in rows:
                if row["id"] in self._in_flight or len(self._in_flight) >= self.max_in_flight:
                    continue
                self._in_flight.add(row["id"])
                task = asyncio.get_running_loop().create_task(self._deliver(row))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            following = self._db.execute("SELECT MIN(next_at) FROM events WHERE status = 'pending' AND next_at > ?",
                                         (now,)).fetchone()[0]
            timeout = 1.0 if following is None else min(1.0, max(0.01, following - time.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _deliver(self, row: sqlite3.Row) -> None:
        event_id = row["id"]
        features = json.loads(row["features"]) if row["features"] else None
        meta = {"invocation_type": "Event", "aws_request_id": row["request_id"]}
        try:
            name, version = pinned_target(row["function"])
            try:
                result = await self.router.invoke(name, row["payload"], meta, features, version)
            except RouterError as error:
                if error.status == 404:
                    self._finish(event_id, "dropped", f"function {row['function']} no longer exists")
                else:  # throttled, no capacity, registry unreachable: Lambda retries these for hours
                    delay = error.retry_after_ms / 1000.0 if isinstance(error, Throttled) else None
                    self._system_retry(row, error.message, delay)
                return
            except Exception as error:  # a router bug: retried with backoff, never in a tight loop
                log.exception("Event invocation %s of %s failed in the router", row["request_id"], row["function"])
                self._system_retry(row, f"router error: {error}", None)
                return
            if self.invocations is not None:
                self.invocations.record(name, row["request_id"], result)
            if result.error == OK:
                self._finish(event_id, "succeeded", "")
            elif result.error == NODE_ERROR:
                self._system_retry(row, result.error_message, None)
            else:
                self._function_error(row, f"{result.error}: {result.error_message}")
        finally:
            self._in_flight.discard(event_id)
            self._wake.set()

    def _function_error(self, row: sqlite3.Row, message: str) -> None:
        attempts = row["attempts"] + 1
        if attempts > len(self.retry_delays_s):
            log.warning("Event invocation %s of %s failed %d times, discarded: %s", row["request_id"],
                        row["function"], attempts, message)
            self._finish(row["id"], "failed", message, attempts)
            return
        self.counts["retried"] += 1
        self._reschedule(row["id"], time.time() + self.retry_delays_s[attempts - 1], message, attempts)

    def _system_retry(self, row: sqlite3.Row, message: str, delay: float | None) -> None:
        if time.time() - row["created_at"] > self.max_age_s:
            self._finish(row["id"], "failed", f"too old to retry: {message}", row["attempts"])
            return
        n = self._system_retries.get(row["id"], 0)
        self._system_retries[row["id"]] = n + 1
        backoff = SYSTEM_BACKOFF_S[min(n, len(SYSTEM_BACKOFF_S) - 1)]
        self.counts["retried"] += 1
        self._reschedule(row["id"], time.time() + max(delay or 0.0, backoff), message, row["attempts"])

    def _reschedule(self, event_id: int, at: float, message: str, attempts: int) -> None:
        assert self._db is not None
        self._db.execute("UPDATE events SET next_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                         (at, attempts, message[:1000], event_id))

    def _finish(self, event_id: int, outcome: str, message: str, attempts: int | None = None) -> None:
        assert self._db is not None
        self.counts[outcome] += 1
        self._system_retries.pop(event_id, None)
        if outcome == "failed":
            self._db.execute("UPDATE events SET status = 'failed', last_error = ?, attempts = COALESCE(?, attempts), "
                             "payload = x'' WHERE id = ?", (message[:1000], attempts, event_id))
        else:
            self._db.execute("DELETE FROM events WHERE id = ?", (event_id,))


def pinned_target(stored: str) -> tuple[str, int | None]:
    """(function, version) of a queued event: ``name`` runs the latest, ``name:N`` version N."""
    name, _, version = stored.partition(":")
    return name, int(version) if version else None
