"""How a client proves itself: the CA it trusts, its certificate, its bearer token.

Every argument left as ``None`` comes from the environment: ``CORRAL_CA``, ``CORRAL_CERT``,
``CORRAL_KEY`` (paths of PEM files) and ``CORRAL_TOKEN``. An empty string means "none", even when
the variable is set. With a CA the channel is TLS (presenting the certificate when one is given);
the token is sent on every call as ``authorization: Bearer <token>``, over TLS or plaintext alike
(a controller run with ``--auth`` on loopback takes tokens without TLS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from corral.controller.sdk.errors import InvalidArgumentError

__all__ = ["ENV_CA", "ENV_CERT", "ENV_KEY", "ENV_TOKEN", "Credentials", "PathLike"]

ENV_CA = "CORRAL_CA"
ENV_CERT = "CORRAL_CERT"
ENV_KEY = "CORRAL_KEY"
ENV_TOKEN = "CORRAL_TOKEN"

PathLike = str | os.PathLike[str]


def _pick(value: PathLike | None, variable: str) -> str | None:
    text = os.environ.get(variable, "") if value is None else os.fspath(value)
    return text or None


def _read(path: str, field: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(violations=[(field, f"cannot read {path}: {exc.strerror or exc}")]) from None


@dataclass(frozen=True, slots=True)
class Credentials:
    """The resolved credentials of one client (PEM bytes, not paths: read once, at construction)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    token: str | None = None

    @classmethod
    def resolve(
        cls,
        *,
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        token: str | None = None,
    ) -> Credentials:
        """Fill what is ``None`` from the environment, read the files and check they fit together.

        Raises :class:`InvalidArgumentError` (field ``ca``, ``cert``, ``key`` or ``token``).
        """
        ca_path, cert_path, key_path = _pick(ca, ENV_CA), _pick(cert, ENV_CERT), _pick(key, ENV_KEY)
        bearer = _pick(token, ENV_TOKEN)
        if (cert_path is None) != (key_path is None):
            field = "key" if cert_path is not None else "cert"
            raise InvalidArgumentError(violations=[(field, "a client certificate needs both cert and key")])
        if cert_path is not None and ca_path is None:
            raise InvalidArgumentError(
                violations=[("ca", "a client certificate is only sent over TLS: give the CA (--ca / CORRAL_CA)")]
            )
        if bearer is not None:
            bearer = bearer.strip()
            # gRPC metadata values are printable ASCII; anything else would fail every call obscurely.
            if not bearer or not all(33 <= ord(c) < 127 for c in bearer):
                raise InvalidArgumentError(violations=[("token", "a token is printable ASCII without spaces")])
        return cls(
            ca=_read(ca_path, "ca") if ca_path else None,
            cert=_read(cert_path, "cert") if cert_path else None,
            key=_read(key_path, "key") if key_path else None,
            token=bearer,
        )

    @property
    def tls(self) -> bool:
        """Whether the channel is TLS."""
        return self.ca is not None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or None for plaintext."""
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata to send with every call (the bearer token, if any)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()
