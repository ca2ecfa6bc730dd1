"""TLS for the controller's listeners: credentials that reload on SIGHUP, and the loopback rule.

gRPC Python can make client certificates either not requested at all or required; it has no
"requested, verified when presented" mode (``require_client_auth=False`` means the server never
asks for one, so the certificate of an agent would never be seen). The controller therefore serves
two kinds of port from one server:

- the main port (``--listen``): server-verified TLS; callers authenticate with bearer tokens
  (clients, and agents that joined with a join token);
- the mutual-TLS port (``--mtls-listen``, opened when ``--client-ca`` is given): every caller
  presents a certificate signed by the client CA (agents with certificates, clients that have one).

Both use :func:`grpc.dynamic_ssl_server_credentials`: gRPC asks the fetcher for new material before
every handshake, and the fetcher hands over what :meth:`ServerTls.reload` prepared, once. Files are
read and checked in :meth:`~ServerTls.reload` (on the event loop, when SIGHUP arrives), never in
the fetcher, which runs on a gRPC thread while a client waits.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["ServerTls", "TlsError", "TlsFiles", "is_loopback", "listen_host"]


class TlsError(ValueError):
    """The TLS files cannot be used (missing, unreadable, not PEM, key and certificate apart)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the controller's TLS material lives (``client_ca`` None: no mutual-TLS port)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class _Material:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    summary: str


class _Fetcher:
    """The certificate configuration fetcher of one port: hands out a new configuration once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None

    def offer(self, configuration: grpc.ServerCertificateConfiguration) -> None:
        with self._lock:
            self._pending = configuration

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # None keeps the current configuration; gRPC calls this before every handshake.
        with self._lock:
            configuration, self._pending = self._pending, None
        return configuration


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load(files: TlsFiles) -> _Material:
    # Imported here: cryptography costs ~8 MiB of RSS, which a plaintext controller never needs.
    from cryptography import x509

    from corral.controller.certs import CertError, common_name, verify_key_pair

    cert = _read(files.cert, "--tls-cert")
    key = _read(files.key, "--tls-key")
    try:
        parsed = verify_key_pair(cert, key, what=f"certificate {files.cert}")
    except CertError as exc:
        raise TlsError(str(exc)) from None
    client_ca = None
    if files.client_ca is not None:
        client_ca = _read(files.client_ca, "--client-ca")
        try:
            if not x509.load_pem_x509_certificates(client_ca):
                raise ValueError("no certificate in it")
        except ValueError as exc:
            raise TlsError(f"--client-ca {files.client_ca} is not a PEM certificate: {exc}") from None
    expires = parsed.not_valid_after_utc.strftime("%Y-%m-%d")
    summary = f"{files.cert} (CN={common_name(parsed)}, serial {parsed.serial_number:x}, expires {expires})"
    return _Material(cert, key, client_ca, summary)


class ServerTls:
    """The controller's TLS credentials, read from ``files`` now and again on :meth:`reload`.

    Raises :class:`TlsError` when the files cannot be used.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._material = _load(files)
        self._server_fetcher = _Fetcher()
        self._mutual_fetcher = _Fetcher()

    @property
    def mutual(self) -> bool:
        """Whether a client CA is configured (the mutual-TLS port is served)."""
        return self.files.client_ca is not None

    @property
    def summary(self) -> str:
        """One phrase naming the certificate in use, for the log."""
        return self._material.summary

    def _configuration(self, mutual: bool) -> grpc.ServerCertificateConfiguration:
        material = self._material
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.client_ca if mutual else None
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of the main port: server TLS, no client certificate asked for."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(False), self._server_fetcher, require_client_authentication=False
        )

    def mutual_credentials(self) -> grpc.ServerCredentials:
        """Credentials of the mutual-TLS port: a certificate signed by the client CA is required."""
        if not self.mutual:
            raise TlsError("no --client-ca: there is no mutual-TLS port")
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(True), self._mutual_fetcher, require_client_authentication=True
        )

    def reload(self) -> str:
        """Read the files again; new connections get the new material. Returns the new summary.

        On a bad file nothing changes and :class:`TlsError` says why: a half-written replacement
        must not take the controller off the network.
        """
        self._material = _load(self.files)
        self._server_fetcher.offer(self._configuration(False))
        if self.mutual:
            self._mutual_fetcher.offer(self._configuration(True))
        return self._material.summary


def listen_host(listen: str) -> str:
    """The host part of ``host:port`` (``[::1]:7070`` gives ``::1``; ``:7070`` gives ``''``)."""
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host.strip("[]")


def is_loopback(listen: str) -> bool:
    """Whether ``host:port`` binds only loopback addresses (names are resolved; every address counts)."""
    host = listen_host(listen)
    if not host:
        return False  # ":7070" binds every interface
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in addresses)
