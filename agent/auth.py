"""How the agent proves who it is: mutual TLS, or a join token exchanged for a stored credential.

- With ``--ca`` alone the channel is TLS and the controller is verified.
- With ``--cert``/``--key`` too the agent presents its certificate (mutual TLS): the certificate's
  common name is the agent's name, and its labels, types and namespaces come from it.
- With ``--join-token`` and no certificate the agent calls ``AgentGateway.Join`` once, stores the
  credential it gets in its work dir (mode 0600, reused on restart) and sends it on every Connect as
  ``authorization: Bearer <credential>``.

This module must not import ``corral.controller``: agents are installed without the controller.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from corral.protocol import PROTOCOL_METADATA, PROTOCOL_VERSION
from corral.v1 import agent_pb2, agent_pb2_grpc

__all__ = ["CREDENTIAL_FILE", "JOIN_TIMEOUT_S", "AgentAuth", "AuthError", "certificate_name"]

CREDENTIAL_FILE = "credential.json"
JOIN_TIMEOUT_S = 10.0


class AuthError(ValueError):
    """The agent's TLS or join settings cannot be used (one line for the operator)."""


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise AuthError(f"{flag} {path}: {exc.strerror or exc}") from None


def certificate_name(cert_pem: bytes) -> str:
    """The common name in a PEM certificate (the agent's identity); AuthError if there is none."""
    # Imported here: only agents with certificates need the X.509 parser.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise AuthError(f"--cert is not a PEM certificate: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise AuthError("--cert has no common name (CN): it cannot name an agent")
    return str(names[0].value)


@dataclass(frozen=True, slots=True)
class _Joined:
    name: str
    agent_id: str
    credential: str


class AgentAuth:
    """The agent's transport credentials and its bearer credential (after a Join).

    ``ca``, ``cert``, ``key`` are paths of PEM files (``cert`` and ``key`` together, and only with
    ``ca``); ``join_token`` is used only when there is no certificate. Files are read here, so a
    bad path fails at start, not on the first connect.
    """

    def __init__(
        self,
        *,
        name: str,
        work_dir: Path,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        join_token: str | None = None,
    ) -> None:
        if (cert is None) != (key is None):
            raise AuthError("--cert and --key go together")
        if cert is not None and ca is None:
            raise AuthError("--cert needs --ca (the CA of the controller's certificate)")
        self.name = name
        self.credential_path = work_dir / CREDENTIAL_FILE
        self._ca = _read(ca, "--ca") if ca is not None else None
        self._cert = _read(cert, "--cert") if cert is not None else None
        self._key = _read(key, "--key") if key is not None else None
        self.certificate_name = certificate_name(self._cert) if self._cert is not None else None
        if self.certificate_name is not None and self.certificate_name != name:
            raise AuthError(
                f"--name {name!r} is not the name in --cert ({self.certificate_name!r}); the controller "
                "knows an agent by its certificate: leave --name out or issue a certificate for this name"
            )
        self.join_token = join_token if self._cert is None and join_token else None
        if join_token is not None and not all(33 <= ord(c) < 127 for c in join_token):
            raise AuthError("--join-token is printable ASCII without spaces")
        self._joined = self._load()

    # -- what the session needs ---------------------------------------------------------------

    @property
    def tls(self) -> bool:
        """Whether the channel is TLS."""
        return self._ca is not None

    @property
    def agent_id(self) -> str:
        """The id the controller knows this agent by (from Join; else the name)."""
        return self._joined.agent_id if self._joined is not None else self.name

    @property
    def needs_join(self) -> bool:
        """Whether a Join must happen before Connect (a join token and no stored credential)."""
        return self.join_token is not None and self._joined is None

    def channel(self, target: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        """A new channel to the controller: TLS (mutual with a certificate) or plaintext."""
        if self._ca is None:
            return grpc.aio.insecure_channel(target, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._ca, private_key=self._key, certificate_chain=self._cert
        )
        return grpc.aio.secure_channel(target, credentials, options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata of Connect: the joined credential, if any."""
        if self._joined is None:
            return ()
        return (("authorization", f"Bearer {self._joined.credential}"),)

    async def join(self, channel: grpc.aio.Channel) -> agent_pb2.JoinResponse:
        """Exchange the join token for this agent's credential and store it (raises AioRpcError)."""
        assert self.join_token is not None
        stub: Any = agent_pb2_grpc.AgentGatewayStub(channel)
        request = agent_pb2.JoinRequest(join_token=self.join_token, name=self.name)
        response: agent_pb2.JoinResponse = await stub.Join(
            request, timeout=JOIN_TIMEOUT_S, metadata=((PROTOCOL_METADATA, str(PROTOCOL_VERSION)),)
        )
        if not response.credential:
            raise AuthError("the controller answered Join without a credential")
        joined = _Joined(self.name, response.agent_id or self.name, response.credential)
        self._store(joined)
        self._joined = joined
        return response

    def forget(self) -> None:
        """Drop the stored credential (the next connect joins again, if there is a join token)."""
        self._joined = None
        self.credential_path.unlink(missing_ok=True)

    # -- the credential file --------------------------------------------------------------------

    def _load(self) -> _Joined | None:
        if self._cert is not None:
            return None
        try:
            body = json.loads(self.credential_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read the stored credential {self.credential_path}: {exc}") from None
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("name", "credential")):
            raise AuthError(
                f"{self.credential_path} is not a credential written by this agent; remove it to join again"
            )
        if body["name"] != self.name:
            return None  # joined under another name: that credential does not name this agent
        agent_id = body.get("agent_id")
        return _Joined(
            body["name"], agent_id if isinstance(agent_id, str) and agent_id else self.name, body["credential"]
        )

    def _store(self, joined: _Joined) -> None:
        directory = self.credential_path.parent
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"name": joined.name, "agent_id": joined.agent_id, "credential": joined.credential})
        # Created 0600 under a temporary name, then renamed: the secret is never readable by others.
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".credential.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.credential_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
