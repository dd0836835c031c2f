"""The code registry as a real process on loopback: uploads validated by wasmtime, versions in
SQLite, content-addressed blobs, ETags, tokens, and what bad input and restarts do to it."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import stat
import threading
from pathlib import Path

import httpx
import pytest
from conftest import RegistryProcess, free_port
from conftest import wat2wasm as wasm

from wlruntime.config import RegistrySettings, Settings
from wlruntime.registry import RegistryClient, RegistryError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WASI_COMMAND_WAT = '(module (memory (export "memory") 1) (func (export "_start")))'
# A different but equally valid command (a second blob).
WASI_COMMAND_2_WAT = '(module (memory (export "memory") 1) (func (export "_start") nop nop))'
NO_START_WAT = '(module (memory (export "memory") 1) (func (export "main")))'
# The smallest component with the wl:handler `handle` export (protos/handler.wit).
HANDLER_COMPONENT_WAT = """(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
    (func (export "handle") (param i32 i32 i32 i32) (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (type $meta (list (tuple string string)))
  (type $res (result (list u8) (error string)))
  (func (export "handle") (param "request" (list u8)) (param "metadata" $meta) (result $res)
    (canon lift (core func $i "handle") (memory (core memory $i "memory"))
                (realloc (core func $i "realloc")))))"""
COMPONENT_WITHOUT_HANDLE_WAT = '(component (core module $m (func (export "f"))) (core instance $i (instantiate $m)))'

DEFAULT_CONFIG = {"memory_mb": 128, "timeout_ms": 3000, "max_instances": 1000, "abi": "wasi-command", "env": {},
                  "fuel": None, "max_payload_bytes": 6291456, "allow_fs": False, "allow_net": False}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    proc = RegistryProcess(tmp_path_factory.mktemp("registry") / "data")
    yield proc
    proc.stop()


@pytest.fixture
def client(registry):
    with registry.client() as c:
        yield c


def unique(prefix: str) -> str:
    """Function names unique within the module-scoped registry."""
    unique.counter += 1
    return f"{prefix}-{unique.counter}"


unique.counter = 0


def snapshot(data_dir: Path) -> dict:
    """Everything an upload could leave behind: files under the data dir and every DB row."""
    files = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                   if p.is_file() and not p.name.startswith("registry.db"))
    with sqlite3.connect(f"file:{data_dir / 'registry.db'}?mode=ro", uri=True) as db:
        rows = {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("names", "versions")}
    return {"files": files, "rows": rows}


# -- the happy path ------------------------------------------------------------------------

def test_upload_then_fetch_by_name_version_and_hash(client):
    code = wasm(WASI_COMMAND_WAT)
    name = unique("echo")
    meta = client.upload(name, code)
    sha = hashlib.sha256(code).hexdigest()
    assert meta["name"] == name and meta["version"] == 1
    assert meta["sha256"] == sha and meta["size"] == len(code)
    assert meta["config"] == DEFAULT_CONFIG  # defaults applied, abi detected from the header
    assert meta["created_at"].endswith("Z")

    assert client.get(name) == meta
    assert client.get(name, 1) == meta
    assert client.fetch_code(name) == code
    assert client.fetch_code(name, 1) == code
    assert client.fetch_code(sha) == code

    r = httpx.get(f"{client.base_url}/functions/{name}/versions/latest/code")
    assert r.status_code == 200 and r.content == code
    assert r.headers["content-type"] == "application/wasm"
    assert r.headers["etag"] == f'"{sha}"'
    assert r.headers["x-wl-version"] == "1"


def test_upload_with_config_keeps_it_and_component_abi_is_detected(client):
    name = unique("stateful")
    meta = client.upload(name, wasm(HANDLER_COMPONENT_WAT),
                         {"memory_mb": 512, "timeout_ms": 10_000, "concurrency": 4, "env": {"MODE": "fast"},
                          "fuel": 1_000_000, "allow_net": True})
    # ``concurrency`` is the earlier name of ``max_instances``: accepted, stored under the new name
    assert meta["config"] == DEFAULT_CONFIG | {"memory_mb": 512, "timeout_ms": 10_000, "max_instances": 4,
                                               "env": {"MODE": "fast"}, "fuel": 1_000_000, "allow_net": True,
                                               "abi": "component"}


def test_versions_increment_and_identical_reupload_returns_latest(client, registry):
    name = unique("versions")
    code = wasm(WASI_COMMAND_WAT)
    v1 = client.upload(name, code)
    v2 = client.upload(name, code, {"memory_mb": 256})
    v3 = client.upload(name, wasm(WASI_COMMAND_2_WAT), {"memory_mb": 256})
    assert [v1["version"], v2["version"], v3["version"]] == [1, 2, 3]

    # The same bytes and config as the latest version: 200 with that version, no new one.
    r = httpx.post(f"{registry.url}/functions/{name}", headers={"Authorization": f"Bearer {registry.token}"},
                   files={"wasm": ("f.wasm", wasm(WASI_COMMAND_2_WAT))}, data={"config": '{"memory_mb": 256}'})
    assert r.status_code == 200 and r.json() == v3

    assert [m["version"] for m in client.versions(name)] == [1, 2, 3]
    assert client.get(name)["version"] == 3
    assert client.get(name, 2)["config"]["memory_mb"] == 256
    listed = {f["name"]: f for f in client.list()}
    assert listed[name] == {"name": name, "latest_version": 3, "sha256": v3["sha256"], "size": v3["size"],
                            "config": v3["config"], "created_at": v3["created_at"]}


def test_concurrent_uploads_get_distinct_consecutive_versions(registry):
    name = unique("parallel")
    results, errors = [], []

    def upload(i: int) -> None:
        try:
            with registry.client() as c:
                results.append(c.upload(name, wasm(WASI_COMMAND_WAT), {"memory_mb": 100 + i})["version"])
        except RegistryError as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == list(range(1, 9))


def test_etag_if_none_match_gives_304(client, registry):
    code = wasm(WASI_COMMAND_WAT)
    name = unique("etag")
    sha = client.upload(name, code)["sha256"]
    for path in (f"/functions/{name}/versions/1/code", f"/functions/{name}/versions/latest/code", f"/blobs/{sha}"):
        r = httpx.get(registry.url + path, headers={"If-None-Match": f'"{sha}"'})
        assert r.status_code == 304, path
        assert r.content == b"" and r.headers["etag"] == f'"{sha}"'
        r = httpx.get(registry.url + path, headers={"If-None-Match": '"0000", W/"' + sha + '"'})
        assert r.status_code == 304, path
        r = httpx.get(registry.url + path, headers={"If-None-Match": '"something-else"'})
        assert r.status_code == 200 and r.content == code, path


def test_client_cache_uses_etags_and_hash_fetches_skip_the_network(client, registry, tmp_path):
    code = wasm(WASI_COMMAND_WAT)
    name = unique("cached")
    client.upload(name, code)
    first = client.fetch(name, cache_dir=tmp_path)
    assert (first.data, first.from_cache, first.version) == (code, False, 1)
    assert first.path is not None and first.path.read_bytes() == code
    second = client.fetch(name, cache_dir=tmp_path)  # conditional request answered 304
    assert (second.data, second.from_cache, second.sha256) == (code, True, first.sha256)

    # A new latest version is not hidden by the cache.
    new_code = wasm(WASI_COMMAND_2_WAT)
    client.upload(name, new_code)
    third = client.fetch(name, cache_dir=tmp_path)
    assert (third.data, third.from_cache, third.version) == (new_code, False, 2)

    # Hashes are immutable: with a cache, a hash fetch needs no registry at all.
    offline = RegistryClient(f"http://127.0.0.1:{free_port()}", cache_dir=tmp_path)
    assert offline.fetch_code(first.sha256) == code
    with pytest.raises(RegistryError) as err:
        offline.fetch_code(name)
    assert err.value.status is None and "cannot reach the registry" in err.value.message


def test_healthz(registry):
    assert httpx.get(f"{registry.url}/healthz").json() == {"status": "ok"}


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("code, abi, message", [
    (b"garbage bytes, not wasm", None, "not a WebAssembly binary"),
    (b"", None, "empty"),
    (WASI_COMMAND_WAT.encode(), None, "WebAssembly text"),
    (b"\0asm\x01\0\0\0\x01\xff", None, "invalid WebAssembly module"),
    (wasm(NO_START_WAT), None, "_start"),
    (wasm(NO_START_WAT), "wasi-command", "_start"),
    (wasm(COMPONENT_WITHOUT_HANDLE_WAT), None, "handle"),
    (wasm(WASI_COMMAND_WAT), "component", "handle"),
    (wasm(HANDLER_COMPONENT_WAT), "wasi-command", "component"),
])
def test_invalid_code_is_rejected_with_the_reason(client, code, abi, message):
    with pytest.raises(RegistryError) as err:
        client.upload(unique("bad-code"), code, {"abi": abi} if abi else None)
    assert err.value.status == 400
    assert message in err.value.message


@pytest.mark.parametrize("name", ["../etc", "..", "A B", "", "x" * 64, "Upper", "-leading", "a/b", "a.b", "é"])
def test_bad_function_names_are_400(client, name):
    with pytest.raises(RegistryError) as err:
        client.upload(name, wasm(WASI_COMMAND_WAT))
    assert err.value.status == 400
    assert "invalid function name" in err.value.message


@pytest.mark.parametrize("path", ["/functions/..%2Fetc", "/functions/A%20B", "/functions/..%2F..%2Fversions/1",
                                  "/functions/Bad/versions/1/code"])
def test_bad_names_on_read_paths_are_400(registry, path):
    r = httpx.get(registry.url + path)
    assert r.status_code == 400, r.text
    assert "invalid function name" in r.json()["detail"]


@pytest.mark.parametrize("config, field", [
    ({"memroy_mb": 256}, "memroy_mb"),
    ({"memory_mb": "256"}, "memory_mb"),
    ({"memory_mb": 0}, "memory_mb"),
    ({"memory_mb": 16385}, "memory_mb"),
    ({"timeout_ms": 900_001}, "timeout_ms"),
    ({"concurrency": 1.5}, "max_instances"),
    ({"max_instances": 1001}, "max_instances"),
    ({"abi": "wasm32"}, "abi"),
    ({"env": {"A": 1}}, "env.A"),
    ({"env": ["A=1"]}, "env"),
    ({"fuel": "lots"}, "fuel"),
    ({"allow_fs": "yes"}, "allow_fs"),
    ({"max_payload_bytes": -1}, "max_payload_bytes"),
])
def test_bad_config_is_400_naming_the_field(client, config, field):
    with pytest.raises(RegistryError) as err:
        client.upload(unique("bad-config"), wasm(WASI_COMMAND_WAT), config)
    assert err.value.status == 400
    assert f"{field}:" in err.value.message


def test_malformed_multipart_fields_are_400(registry):
    auth = {"Authorization": f"Bearer {registry.token}"}
    url = f"{registry.url}/functions/{unique('multipart')}"
    r = httpx.post(url, headers=auth, data={"config": "{}"}, files={"other": ("x", b"x")})
    assert r.status_code == 400 and "'wasm'" in r.json()["detail"]
    r = httpx.post(url, headers=auth, data={"wasm": "not a file"})
    assert r.status_code == 400 and "'wasm'" in r.json()["detail"]
    r = httpx.post(url, headers=auth, files={"wasm": ("f.wasm", wasm(WASI_COMMAND_WAT))}, data={"config": "{oops"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = httpx.post(url, headers=auth, files={"wasm": ("f.wasm", wasm(WASI_COMMAND_WAT))}, data={"config": "[1]"})
    assert r.status_code == 400 and "JSON object" in r.json()["detail"]


def test_writes_need_the_token_reads_do_not(registry):
    name = unique("auth")
    code = wasm(WASI_COMMAND_WAT)
    for token in ("", "wrong-token"):
        with RegistryClient(registry.url, token or None) as c:
            with pytest.raises(RegistryError) as err:
                c.upload(name, code)
            assert err.value.status == 401
            assert ("missing token" if not token else "wrong token") in err.value.message
    with registry.client() as c:
        c.upload(name, code)
    with RegistryClient(registry.url, "wrong-token") as c:
        with pytest.raises(RegistryError) as err:
            c.delete(name)
        assert err.value.status == 401
    r = httpx.delete(f"{registry.url}/functions/{name}")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    with RegistryClient(registry.url) as anonymous:  # nodes read without a token
        assert anonymous.get(name)["version"] == 1
        assert anonymous.fetch_code(name) == code


def test_unknown_names_versions_and_blobs_are_404(client):
    name = unique("known")
    client.upload(name, wasm(WASI_COMMAND_WAT))
    cases = [
        (lambda: client.get("no-such-function"), "no function named 'no-such-function'"),
        (lambda: client.versions("no-such-function"), "no function named"),
        (lambda: client.fetch_code("no-such-function"), "no function named"),
        (lambda: client.get(name, 7), f"function '{name}' has no version 7"),
        (lambda: client.fetch_code(name, 7), "has no version 7"),
        (lambda: client.fetch_code("ab" * 32), "no blob with sha256"),
        (lambda: client.delete("no-such-function"), "no function named"),
    ]
    for call, message in cases:
        with pytest.raises(RegistryError) as err:
            call()
        assert err.value.status == 404 and message in err.value.message
    for bad_version in ("0", "-1", "x", "1.0"):
        with pytest.raises(RegistryError) as err:
            client.get(name, bad_version)
        assert err.value.status == 400 and "invalid version" in err.value.message
    r = httpx.get(f"{client.base_url}/blobs/not-a-hash")
    assert r.status_code == 400 and "invalid sha256" in r.json()["detail"]


def test_delete_removes_versions_and_unshared_blobs_and_numbering_continues(client, registry):
    shared, alone, other = unique("shared"), unique("alone"), unique("other")
    code = wasm(WASI_COMMAND_WAT)
    other_code = wasm('(module (memory (export "memory") 1) (func (export "_start") nop nop nop))')
    sha, other_sha = hashlib.sha256(code).hexdigest(), hashlib.sha256(other_code).hexdigest()
    client.upload(shared, code)
    client.upload(alone, code)
    client.upload(other, other_code)
    blob = registry.data_dir / "blobs" / sha[:2] / f"{sha}.wasm"
    other_blob = registry.data_dir / "blobs" / other_sha[:2] / f"{other_sha}.wasm"

    assert client.delete(alone) == {"name": alone, "deleted_versions": 1}
    assert blob.is_file()  # still used by `shared`
    assert client.delete(other) == {"name": other, "deleted_versions": 1}
    assert not other_blob.exists()
    with pytest.raises(RegistryError) as err:
        client.get(other)
    assert err.value.status == 404
    assert other not in {f["name"] for f in client.list()}
    # A re-upload after a delete never reuses a version number a node may have cached.
    assert client.upload(other, code)["version"] == 2


# -- limits, atomicity, persistence --------------------------------------------------------

@pytest.fixture(scope="module")
def strict_registry(tmp_path_factory):
    """Small upload limit (set through the environment) and tokens required for reads."""
    proc = RegistryProcess(tmp_path_factory.mktemp("strict") / "data", "--read-token-required",
                           env={"WL_REGISTRY_MAX_WASM_BYTES": "1000"})
    yield proc
    proc.stop()


def test_oversize_upload_is_413(strict_registry):
    before = snapshot(strict_registry.data_dir)
    valid_header = b"\0asm\x01\0\0\0"
    with strict_registry.client() as c:
        # Over the code limit but within the body slack: rejected after parsing.
        with pytest.raises(RegistryError) as err:
            c.upload("big", valid_header + b"\0" * 2000)
        assert err.value.status == 413 and "at most 1000 bytes" in err.value.message
        # Far over: rejected from Content-Length before the body is read.
        with pytest.raises(RegistryError) as err:
            c.upload("big", valid_header + b"\0" * (3 * 1024 * 1024))
        assert err.value.status == 413 and "at most 1000 bytes" in err.value.message
        assert c.upload("small", wasm(WASI_COMMAND_WAT))["version"] == 1

    # Chunked, without Content-Length: cut off while streaming.
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="wasm"; filename="a.wasm"\r\n\r\n'
        for _ in range(64):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{strict_registry.url}/functions/big", content=body(),
                   headers={"Authorization": f"Bearer {strict_registry.token}",
                            "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    after = snapshot(strict_registry.data_dir)
    new_rows = set(after["rows"]["versions"]) - set(before["rows"]["versions"])
    assert [row[0] for row in new_rows] == ["small"]
    small_sha = hashlib.sha256(wasm(WASI_COMMAND_WAT)).hexdigest()
    assert set(after["files"]) - set(before["files"]) == {f"blobs/{small_sha[:2]}/{small_sha}.wasm"}


def test_read_token_required(strict_registry):
    with strict_registry.client() as c:
        c.upload("private", wasm(WASI_COMMAND_WAT))
    for path in ("/functions", "/functions/private", "/functions/private/versions/latest",
                 "/functions/private/versions/1/code"):
        assert httpx.get(strict_registry.url + path).status_code == 401, path
    with RegistryClient(strict_registry.url) as anonymous:
        with pytest.raises(RegistryError) as err:
            anonymous.fetch_code("private")
        assert err.value.status == 401
        assert anonymous.health() == {"status": "ok"}  # health stays open for probes
    with strict_registry.client() as c:
        assert c.fetch_code("private") == wasm(WASI_COMMAND_WAT)


def test_failed_and_aborted_uploads_leave_nothing_behind(client, registry):
    name = unique("atomic")
    client.upload(name, wasm(WASI_COMMAND_WAT))
    before = snapshot(registry.data_dir)
    failures = [
        (name, b"garbage"),
        (name, wasm(NO_START_WAT)),
        (unique("atomic-new"), wasm(NO_START_WAT)),
        (name, wasm(WASI_COMMAND_2_WAT), {"memory_mb": -5}),
    ]
    for args in failures:
        with pytest.raises(RegistryError):
            client.upload(*args)
    with RegistryClient(registry.url, "wrong") as wrong, pytest.raises(RegistryError):
        wrong.upload(name, wasm(WASI_COMMAND_2_WAT))

    # A client that dies mid-upload: headers promise 100 kB, half arrives, the socket closes.
    with socket.create_connection(("127.0.0.1", registry.port)) as s:
        s.sendall((f"POST /functions/{name} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {registry.token}\r\n"
                   "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                   '--b\r\nContent-Disposition: form-data; name="wasm"; filename="a.wasm"\r\n\r\n').encode()
                  + wasm(WASI_COMMAND_2_WAT) + b"\0" * 50_000)
    assert httpx.get(f"{registry.url}/healthz").status_code == 200
    assert snapshot(registry.data_dir) == before
    assert client.get(name)["version"] == 1


def test_data_and_generated_token_persist_across_restart(tmp_path):
    data_dir = tmp_path / "data"
    first = RegistryProcess(data_dir, token=None)  # no token configured: one is generated
    try:
        token_file = data_dir / "registry.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in first.log()
        token = first.token
        assert len(token) >= 32
        with first.client() as c:
            meta = c.upload("persist", wasm(WASI_COMMAND_WAT), {"memory_mb": 64})
    finally:
        first.stop()

    (data_dir / "tmp" / "leftover.wasm").write_bytes(b"half an upload from a crash")
    second = RegistryProcess(data_dir, token=None)
    try:
        assert second.token == token
        assert not (data_dir / "tmp" / "leftover.wasm").exists()
        with second.client() as c:
            assert c.get("persist") == meta
            assert c.fetch_code("persist") == wasm(WASI_COMMAND_WAT)
            assert c.fetch_code(meta["sha256"]) == wasm(WASI_COMMAND_WAT)
            assert c.upload("persist", wasm(WASI_COMMAND_2_WAT))["version"] == 2
        # What `wl deploy` does: find the registry and its generated token from the settings.
        settings = Settings(registry=RegistrySettings(data_dir=data_dir, port=second.port))
        with RegistryClient.from_settings(settings) as c:
            assert c.base_url == second.url
            assert c.upload("from-settings", wasm(WASI_COMMAND_WAT))["version"] == 1
        with RegistryClient(second.url, "not-the-token") as wrong:
            with pytest.raises(RegistryError) as err:
                wrong.upload("persist", wasm(WASI_COMMAND_WAT))
            assert err.value.status == 401
    finally:
        second.stop()
    with sqlite3.connect(data_dir / "registry.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert json.loads(db.execute("SELECT config FROM versions WHERE version = 1").fetchone()[0])["memory_mb"] == 64


def test_max_instances_default_and_its_earlier_name_in_stored_configs():
    from wlruntime.registry.models import DEFAULT_MAX_INSTANCES, FunctionConfig

    assert FunctionConfig().max_instances == DEFAULT_MAX_INSTANCES == 1000   # no per-function cap, like Lambda
    old = FunctionConfig.from_stored({"memory_mb": 64, "concurrency": 3})   # stored before the rename
    assert old.max_instances == 3 and "concurrency" not in old.model_dump()
    assert FunctionConfig.from_stored({"max_instances": 5}).max_instances == 5
    assert FunctionConfig.model_validate({"max_instances": 2, "concurrency": 2}).max_instances == 2
    with pytest.raises(ValueError, match=r"max_instances and concurrency .* give one of them"):
        FunctionConfig.model_validate({"max_instances": 2, "concurrency": 3})
