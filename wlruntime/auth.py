"""Authenticated internal gRPC: the node service and the router's Scheduler service.

Every internal call carries ``authorization: Bearer <token>`` in its metadata; a server built
with ``InternalAuth.server_interceptors()`` answers any call without the right token with
UNAUTHENTICATED before the service sees it (so nothing changes). ``wl up`` gives every child
the platform token in ``WL_INTERNAL_TOKEN``; without a token the services stay open (a node
started by hand for a test) and say so in their log.

TLS is optional, for nodes on hosts other than loopback: ``WL_TLS_CERT`` / ``WL_TLS_KEY`` (this
process's certificate and key, PEM files) and ``WL_TLS_CA`` (the CA that signed the peers'
certificates) make servers listen with TLS and channels verify the peer.

    auth = InternalAuth.from_env()
    server = grpc.aio.server(interceptors=auth.server_interceptors())
    auth.add_port(server, "127.0.0.1:7710")
    channel = auth.aio_channel("127.0.0.1:7710", options)   # calls carry the token
"""

from __future__ import annotations

import hmac
import logging
import os
from collections import namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger("wlruntime.auth")

TOKEN_ENV = "WL_INTERNAL_TOKEN"
TLS_CERT_ENV = "WL_TLS_CERT"
TLS_KEY_ENV = "WL_TLS_KEY"
TLS_CA_ENV = "WL_TLS_CA"
METADATA_KEY = "authorization"
UNAUTHENTICATED_MESSAGE = "missing or wrong internal token (metadata 'authorization: Bearer <token>')"


class AuthConfigError(ValueError):
    """Inconsistent TLS settings (e.g. a certificate without its key); the message says which."""


@dataclass(frozen=True)
class InternalAuth:
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InternalAuth:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value).expanduser() if value else None

        auth = cls(env.get(TOKEN_ENV, "").strip() or None, path(TLS_CERT_ENV), path(TLS_KEY_ENV), path(TLS_CA_ENV))
        auth.check()
        return auth

    def check(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise AuthConfigError(f"TLS needs both {TLS_CERT_ENV} and {TLS_KEY_ENV} (a certificate and its key)")
        for name, p in ((TLS_CERT_ENV, self.tls_cert), (TLS_KEY_ENV, self.tls_key), (TLS_CA_ENV, self.tls_ca)):
            if p is not None and not p.is_file():
                raise AuthConfigError(f"{name}: no such file: {p}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_ca is not None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((METADATA_KEY, f"Bearer {self.token}"),) if self.token else ()

    # ---- servers ---------------------------------------------------------------------------------
    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if not self.token:
            log.warning("internal gRPC is not authenticated (no %s): anyone who reaches this port can call it",
                        TOKEN_ENV)
            return []
        return [TokenServerInterceptor(self.token)]

    def add_port(self, server: Any, address: str) -> int:
        """Listen on ``address`` (with TLS when configured); the bound port, 0 when it failed."""
        try:
            if self.tls_cert is not None and self.tls_key is not None:
                root = self.tls_ca.read_bytes() if self.tls_ca is not None else None
                credentials = grpc.ssl_server_credentials(
                    [(self.tls_key.read_bytes(), self.tls_cert.read_bytes())], root_certificates=root,
                    require_client_auth=root is not None)
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)
        except RuntimeError:
            return 0

    # ---- clients ---------------------------------------------------------------------------------
    def _channel_credentials(self) -> grpc.ChannelCredentials:
        root = self.tls_ca.read_bytes() if self.tls_ca is not None else None
        key = self.tls_key.read_bytes() if self.tls_key is not None else None
        cert = self.tls_cert.read_bytes() if self.tls_cert is not None else None
        return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)

    def aio_channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A grpc.aio channel whose calls carry the token."""
        interceptors = _aio_client_interceptors(self.metadata) if self.token else None
        if self.tls:
            return grpc.aio.secure_channel(address, self._channel_credentials(), options=list(options),
                                           interceptors=interceptors)
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """A blocking channel whose calls carry the token."""
        if self.tls:
            channel = grpc.secure_channel(address, self._channel_credentials(), options=list(options))
        else:
            channel = grpc.insecure_channel(address, options=list(options))
        if self.token:
            channel = grpc.intercept_channel(channel, _SyncTokenInterceptor(self.metadata))
        return channel


# ---- server side ---------------------------------------------------------------------------------
def _token_of(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class TokenServerInterceptor(grpc.aio.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call that does not carry the token; the service's method
    never runs for it."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        given = _token_of(details.invocation_metadata)
        handler = await continuation(details)
        if given is not None and hmac.compare_digest(given.encode(), self._token):
            return handler
        if handler is None:  # an unknown method: let gRPC answer UNIMPLEMENTED
            return None
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

    async def refuse_streaming(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        yield  # pragma: no cover - makes this an async generator, as a streaming handler must be

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


# ---- client side ---------------------------------------------------------------------------------
def _aio_client_interceptors(extra: tuple[tuple[str, str], ...]) -> list[grpc.aio.ClientInterceptor]:
    def details_with_token(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                          grpc.aio.Metadata(*(list(details.metadata or ()) + list(extra))),
                                          details.credentials, details.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
            return await continuation(details_with_token(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
            return await continuation(details_with_token(details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
            return await continuation(details_with_token(details), request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
            return await continuation(details_with_token(details), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]


class _ClientCallDetails(
        namedtuple("_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                          "compression")),
        grpc.ClientCallDetails):
    pass


class _SyncTokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self._extra = extra

    def _details(self, details: Any) -> Any:
        return _ClientCallDetails(details.method, details.timeout, list(details.metadata or ()) + list(self._extra),
                                  details.credentials, getattr(details, "wait_for_ready", None),
                                  getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
        return continuation(self._details(details), request_iterator)


__all__ = ["TOKEN_ENV", "AuthConfigError", "InternalAuth", "TokenServerInterceptor"]
