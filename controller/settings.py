"""The controller's settings: one pydantic-settings class, layered flags > env > file > defaults.

Environment variables are ``CORRAL_CONTROLLER_<FIELD>`` (``CORRAL_CONTROLLER_LISTEN``,
``CORRAL_CONTROLLER_STORE`` ...; ``$CORRAL_LOG_FORMAT`` still works for ``log_format``); the file
is ``--config FILE``, else ``$CORRAL_CONTROLLER_CONFIG``, else ``<config dir>/controller.toml``
(or ``.yaml``) when present, with the flags' names as keys (``fence_after = 45``). The flags
themselves are parsed in :mod:`corral.controller.flags`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from corral.controller.durations import parse_duration
from corral.controller.store.factory import StoreUrl, parse_store_url, sqlite_url
from corral.dirs import controller_db
from corral.layers import LayeredSettings

__all__ = ["ControllerSettings", "is_host_port"]

_NON_NEGATIVE = (
    "heartbeat_interval",
    "lease",
    "fence_after",
    "adopt_grace",
    "reconnect_grace",
    "kill_grace",
    "assignment_lease",
    "reserve_after",
    "lookahead",
    "reservation_expiry_factor",
    "cordon_after",
    "cordon_cooldown",
    "max_heartbeats_per_s",
)


def is_host_port(value: str) -> bool:
    """``host:port`` with a numeric port below 65536 (``[v6]:port`` too)."""
    host, colon, port = value.rpartition(":")
    return bool(colon) and port.isdigit() and int(port) < 65536 and (not host.startswith("[") or host.endswith("]"))


class ControllerSettings(LayeredSettings):
    """Everything ``corral controller`` is told; field names are the flags' (``--fence-after``: ``fence_after``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_CONTROLLER_")
    legacy_env = {"log_format": "CORRAL_LOG_FORMAT"}

    listen: str = "127.0.0.1:7070"
    #: where state lives (see corral.controller.store.factory); None: the SQLite file in the state dir
    store: str | None = None
    address_file: Path | None = None
    http: str | None = None
    http_address_file: Path | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    heartbeat_interval: float = 2.0
    lease: float = 15.0
    fence_after: float = 30.0
    adopt_grace: float = 30.0
    reconnect_grace: float = 5.0
    kill_grace: float = 10.0
    max_preemptions: int = 3
    prefetch: int = 1
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 256 << 20
    assignment_lease: float = 3.0
    agent_ttl: float = 3600.0
    max_agents: int = 10_000
    deadline_scheduling: bool = True
    reserve_after: float = 60.0
    lookahead: float = 0.05
    cordon_after: int = 5
    cordon_cooldown: float = 300.0
    reservation_expiry_factor: float = 2.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    auth: bool = False
    admin_token_file: Path | None = None
    secret_key_file: Path | None = None
    audit_retain: str = "90d"
    #: PostgreSQL store (active/standby): the address in the leader lease (None: --listen)
    advertise: str | None = None
    lease_ttl: float = 5.0  # seconds a leader's lease lasts unrenewed
    evict_after: str = "30s"  # finished workflows idle this long leave memory ("0": never)
    retain: str = "0"  # finished workflows this old are deleted ("0": kept forever)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    mtls_listen: str | None = None
    mtls_address_file: Path | None = None
    health_listen: str | None = None
    insecure: bool = False
    max_heartbeats_per_s: float = 100.0  # issue 13: the fleet's heartbeat pace (0: never paced)

    @property
    def evict_after_s(self) -> float:
        """``evict_after`` in seconds (checked when the settings are built)."""
        return parse_duration(self.evict_after)

    @property
    def retain_s(self) -> float:
        """``retain`` in seconds, 0 for keep forever (checked when the settings are built)."""
        return parse_duration(self.retain)

    @property
    def audit_retain_s(self) -> float:
        """``audit_retain`` in seconds (checked when the settings are built)."""
        return parse_duration(self.audit_retain)

    @property
    def store_url(self) -> str:
        """The store URL: ``store``, else the SQLite file in the user's state directory."""
        return self.store or sqlite_url(controller_db())

    @property
    def parsed_store(self) -> StoreUrl:
        """:attr:`store_url` parsed (checked when the settings are built)."""
        return parse_store_url(self.store_url)

    @property
    def memory(self) -> bool:
        """Whether state lives in memory only (``--memory``, ``memory://``)."""
        return self.parsed_store.kind == "memory"

    @model_validator(mode="after")
    def _check(self) -> ControllerSettings:
        # The messages name the flags: most values come from them (and env/file use the same names).
        for flag in ("audit_retain", "evict_after", "retain"):
            try:
                parse_duration(getattr(self, flag))
            except ValueError as exc:
                raise ValueError(f"--{flag.replace('_', '-')}: {exc}") from None
        if self.store is not None:
            try:
                parse_store_url(self.store)
            except ValueError as exc:
                raise ValueError(f"--store: {exc}") from None
        for name in _NON_NEGATIVE:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0")
        if not math.isfinite(self.agent_ttl) or self.agent_ttl <= 0:
            raise ValueError("--agent-ttl must be a finite number of seconds > 0")
        if not 0 <= self.max_preemptions <= 1000:
            raise ValueError("--max-preemptions must be between 0 and 1000")
        if self.max_agents < 1:
            raise ValueError("--max-agents must be at least 1")
        if self.cache_max_entries < 0 or self.cache_max_bytes < 0:
            raise ValueError("--cache-max-entries and --cache-max-bytes must be >= 0 (0: no caching)")
        if self.heartbeat_interval <= 0 or self.lease <= self.heartbeat_interval:
            raise ValueError("--lease must be longer than --heartbeat-interval, which must be > 0")
        if self.fence_after <= self.lease:
            # Lost (nothing new placed) must come before fenced (attempts stop themselves): a
            # partition shorter than the lease must never kill anything.
            raise ValueError(f"--fence-after ({self.fence_after:g} s) must be longer than --lease ({self.lease:g} s)")
        self._check_tls()
        if self.http is not None and not is_host_port(self.http):
            raise ValueError(f"--http wants host:port (port 0: any free port), got {self.http!r}")
        if self.http_address_file is not None and self.http is None:
            raise ValueError("--http-address-file needs --http")
        if self.advertise is not None and not is_host_port(self.advertise):
            raise ValueError(f"--advertise wants host:port, got {self.advertise!r}")
        if not (math.isfinite(self.lease_ttl) and 0.3 <= self.lease_ttl <= 3600):
            raise ValueError("--lease-ttl must be between 0.3 and 3600 seconds")
        return self

    def _check_tls(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_cert is None and (self.client_ca is not None or self.mtls_listen or self.mtls_address_file):
            raise ValueError("--client-ca, --mtls-listen and --mtls-address-file need --tls-cert and --tls-key")
        if self.client_ca is None and (self.mtls_listen or self.mtls_address_file):
            raise ValueError("--mtls-listen and --mtls-address-file need --client-ca")
