"""Internal gRPC authentication (wlruntime/auth.py) on a real node server: the token in call
metadata, UNAUTHENTICATED without it (unary and streaming), and mutual TLS from given
certificate files (made here with the openssl command)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest

from wlruntime.auth import AuthConfigError, InternalAuth
from wlruntime.node.server import start_node
from wlruntime.proto import node_pb2 as pb
from wlruntime.proto import node_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "internal-test-token"


def run(coro):
    return asyncio.run(coro)


async def _node(auth: InternalAuth):
    # No registry is needed for Health/Status; an unreachable address is answered at once.
    return await start_node(registry_url="http://127.0.0.1:9", node_id="auth-node", memory_mb=64, port=0,
                            auth=auth)


def test_calls_without_the_token_are_unauthenticated_with_it_they_work() -> None:
    async def scenario() -> None:
        node = await _node(InternalAuth(token=TOKEN))
        address = f"127.0.0.1:{node.port}"
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = node_pb2_grpc.NodeStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Health(pb.HealthRequest(), timeout=5)
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
                assert "internal token" in caught.value.details()
                stream = stub.DoStream(timeout=5)
                await stream.write(pb.DoBatch(requests=[pb.DoRequest(instance_id="x", kill=pb.Kill())]))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stream.read()
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            async with InternalAuth(token="wrong").aio_channel(address) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await node_pb2_grpc.NodeStub(channel).Status(pb.StatusRequest(), timeout=5)
                assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            async with InternalAuth(token=TOKEN).aio_channel(address) as channel:
                reply = await node_pb2_grpc.NodeStub(channel).Health(pb.HealthRequest(), timeout=5)
                assert reply.ok and reply.node_id == "auth-node"
            # The blocking client (the node's Scheduler calls use it) carries the token too.
            channel = InternalAuth(token=TOKEN).channel(address)
            try:
                status = await asyncio.to_thread(node_pb2_grpc.NodeStub(channel).Status, pb.StatusRequest(), timeout=5)
                assert status.node_id == "auth-node"
            finally:
                channel.close()
        finally:
            await node.stop(0)

    run(scenario())


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it (cert, key, ca)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=wl test CA")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "node.pem", "-days", "2", "-extfile", "ext.cnf")
    return folder / "node.pem", folder / "node.key", folder / "ca.pem"


def test_mutual_tls_from_given_certificate_files(tmp_path: Path) -> None:
    cert, key, ca = _certificates(tmp_path)
    auth = InternalAuth(token=TOKEN, tls_cert=cert, tls_key=key, tls_ca=ca)
    assert InternalAuth.from_env({"WL_INTERNAL_TOKEN": TOKEN, "WL_TLS_CERT": str(cert), "WL_TLS_KEY": str(key),
                                  "WL_TLS_CA": str(ca)}) == auth

    async def scenario() -> None:
        node = await _node(auth)
        address = f"127.0.0.1:{node.port}"
        try:
            async with auth.aio_channel(address) as channel:
                assert (await node_pb2_grpc.NodeStub(channel).Health(pb.HealthRequest(), timeout=5)).ok
            async with grpc.aio.insecure_channel(address) as channel:  # plaintext to a TLS port
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await node_pb2_grpc.NodeStub(channel).Health(pb.HealthRequest(), timeout=3)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            no_client_cert = InternalAuth(token=TOKEN, tls_ca=ca)  # trusts the node, but has no certificate
            async with no_client_cert.aio_channel(address) as channel:
                with pytest.raises(grpc.aio.AioRpcError):
                    await node_pb2_grpc.NodeStub(channel).Health(pb.HealthRequest(), timeout=3)
        finally:
            await node.stop(0)

    run(scenario())


@pytest.mark.parametrize(("env", "message"), [
    ({"WL_TLS_CERT": "/x.pem"}, "needs both WL_TLS_CERT and WL_TLS_KEY"),
    ({"WL_TLS_CERT": "/no/such.pem", "WL_TLS_KEY": "/no/such.key"}, "WL_TLS_CERT: no such file"),
])
def test_inconsistent_tls_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        InternalAuth.from_env(env)
