"""Registry storage: code blobs content-addressed by sha256 in a folder, versions in SQLite.

Layout of the registry directory::

    registry.db               SQLite (WAL): names (version counters) and versions
    blobs/<aa>/<sha256>.wasm  code, written to tmp/ + fsync + rename: never half-written
    tmp/                      in-flight uploads; emptied at start (leftovers of a crash)

Version numbers per name only grow, also across a delete, so ``name@version`` always means
the same bytes to a node that cached it. Within this registry, that is: a registry made anew
(its folder wiped) starts again at 1, so it gets a new random ``registry_id`` (kept in the
database), and nodes key what they cache about versions by it.

Blob removal and blob adoption both happen while holding SQLite's write lock, so a delete
never removes a blob that a concurrent upload is about to reference.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    name         TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    config     TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS versions_by_sha256 ON versions (sha256);
CREATE TABLE IF NOT EXISTS registry (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _metadata(row: sqlite3.Row) -> dict[str, Any]:
    return {"name": row["name"], "version": row["version"], "sha256": row["sha256"], "size": row["size"],
            "config": json.loads(row["config"]), "created_at": row["created_at"]}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RegistryStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "registry.db"
        for folder in (self.root, self.blobs_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
        self._local = threading.local()
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO registry (key, value) VALUES ('id', ?)", (secrets.token_hex(16),))
            self.registry_id: str = db.execute("SELECT value FROM registry WHERE key = 'id'").fetchone()["value"]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _db(self) -> sqlite3.Connection:
        """This thread's connection. Requests run on a thread pool and sqlite3 connections
        must not cross threads; reusing one per thread saves a connect (~1 ms) per request."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / f"{sha256}.wasm"

    # -- writes ---------------------------------------------------------------------------

    def add_version(self, name: str, data: bytes, sha256: str, config: dict[str, Any]) -> tuple[dict, bool]:
        """Store a new version of ``name``; returns (metadata, created). When the latest
        version already has these bytes and this config, returns it with created=False."""
        config_json = _canonical(config)
        blob = self.blob_path(sha256)
        staged = None if blob.is_file() else self._stage(data)
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")  # the write lock: versions and blobs change together
            try:
                latest = db.execute(
                    "SELECT * FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
                ).fetchone()
                if latest is not None and latest["sha256"] == sha256 and latest["config"] == config_json:
                    db.execute("ROLLBACK")
                    return _metadata(latest), False
                if not blob.is_file():  # a concurrent delete may have removed it meanwhile
                    staged = staged or self._stage(data)
                    blob.parent.mkdir(exist_ok=True)
                    os.replace(staged, blob)
                    staged = None
                    _fsync_dir(blob.parent)
                row = db.execute("SELECT last_version FROM names WHERE name = ?", (name,)).fetchone()
                version = (row["last_version"] if row else 0) + 1
                db.execute("INSERT INTO names (name, last_version) VALUES (?, ?) "
                           "ON CONFLICT (name) DO UPDATE SET last_version = excluded.last_version",
                           (name, version))
                created_at = _now()
                db.execute("INSERT INTO versions (name, version, sha256, size, config, created_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (name, version, sha256, len(data), config_json, created_at))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        return {"name": name, "version": version, "sha256": sha256, "size": len(data),
                "config": json.loads(config_json), "created_at": created_at}, True

    def _stage(self, data: bytes) -> Path:
        """Write ``data`` to a temp file on the registry's filesystem and fsync it."""
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, suffix=".wasm")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def delete(self, name: str) -> int:
        """Remove every version of ``name`` and the blobs no other version uses; returns the
        number of versions removed (0: unknown name)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            shas = [r["sha256"] for r in
                    db.execute("SELECT DISTINCT sha256 FROM versions WHERE name = ?", (name,))]
            removed = db.execute("DELETE FROM versions WHERE name = ?", (name,)).rowcount
            for sha in shas:
                if db.execute("SELECT 1 FROM versions WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None:
                    self.blob_path(sha).unlink(missing_ok=True)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return removed

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str, version: int | None) -> dict | None:
        """Metadata of ``name@version`` (None: latest), or None when there is no such version."""
        db = self._db()
        if version is None:
            row = db.execute("SELECT * FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1",
                             (name,)).fetchone()
        else:
            row = db.execute("SELECT * FROM versions WHERE name = ? AND version = ?",
                             (name, version)).fetchone()
        return _metadata(row) if row is not None else None

    def has_code(self, sha256: str, abi: str) -> bool:
        """Whether some stored version has these bytes under this ABI: they passed validation."""
        row = self._db().execute(
            "SELECT 1 FROM versions WHERE sha256 = ? AND json_extract(config, '$.abi') = ? LIMIT 1", (sha256, abi)
        ).fetchone()
        return row is not None

    def versions(self, name: str) -> list[dict]:
        db = self._db()
        rows = db.execute("SELECT * FROM versions WHERE name = ? ORDER BY version", (name,)).fetchall()
        return [_metadata(r) for r in rows]

    def latest_of_each(self) -> list[dict]:
        db = self._db()
        rows = db.execute(
            "SELECT v.* FROM versions v JOIN (SELECT name, MAX(version) AS version FROM versions "
            "GROUP BY name) m ON v.name = m.name AND v.version = m.version ORDER BY v.name"
        ).fetchall()
        return [_metadata(r) for r in rows]
