"""The wire protocol's version, and how clients and agents find the leader among several controllers.

Shared by the controller, the client SDK and the agent (which is installed without the controller),
so it imports nothing but the standard library.

**Versions.** :data:`PROTOCOL_VERSION` is bumped whenever a change would break the other side. Agents
send it in ``Hello.protocol_version`` and as call metadata ``corral-protocol``; the SDK and the CLI
send the metadata. A controller accepts its own version and the one before (N-1), so a rolling
upgrade never has to stop every agent at once, and refuses older ones with FAILED_PRECONDITION. A
peer that sends no version predates versioning and counts as :data:`UNVERSIONED` (11), the
protocol of every release before this one: accepted while N is 12, refused from N = 13 on. A newer
peer is accepted: an older controller cannot judge a future protocol (new fields are ignored).

**Leaders.** A standby controller answers every call UNAVAILABLE with the trailing metadata
``corral-leader: HOST:PORT`` (empty when it knows no leader). Clients and agents take a
comma-separated list of addresses and go to the hinted leader, else to the next address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "LEADER_METADATA",
    "MIN_PROTOCOL",
    "PROTOCOL_METADATA",
    "PROTOCOL_VERSION",
    "UNVERSIONED",
    "leader_hint",
    "parse_addresses",
    "peer_version",
    "refusal",
]

#: This release's protocol (N).
PROTOCOL_VERSION: Final = 12
#: The oldest protocol a controller of this release accepts (N-1).
MIN_PROTOCOL: Final = PROTOCOL_VERSION - 1
#: What a peer that sends no version speaks: every release before versioning.
UNVERSIONED: Final = 11
#: Call metadata carrying the caller's protocol version (decimal).
PROTOCOL_METADATA: Final = "corral-protocol"
#: Trailing metadata of a standby's UNAVAILABLE answer: the leader's address, or "" when unknown.
LEADER_METADATA: Final = "corral-leader"

#: At most this many addresses in one list (a list is typed by hand or templated, never huge).
MAX_ADDRESSES: Final = 32
_MAX_ADDRESS = 255
# host:port, [v6]:port, or a gRPC target with a scheme (unix:/path, dns:///host:port): no spaces.
_ADDRESS = re.compile(r"^[^\s,]+$")


def parse_addresses(text: str) -> tuple[str, ...]:
    """``"a:7070, b:7070"`` -> ``("a:7070", "b:7070")``: stripped, duplicates dropped, order kept.

    Raises ValueError naming the problem (no address, a blank entry, one too long, too many).
    """
    parts = [part.strip() for part in text.split(",")]
    if not text.strip():
        raise ValueError("no controller address given")
    if any(not part for part in parts):
        raise ValueError(f"an empty address in {text!r} (give HOST:PORT[,HOST:PORT...])")
    addresses = tuple(dict.fromkeys(parts))
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"{len(addresses)} addresses, over the limit of {MAX_ADDRESSES}")
    for address in addresses:
        if len(address) > _MAX_ADDRESS or not _ADDRESS.match(address):
            raise ValueError(f"not a controller address: {address[:_MAX_ADDRESS]!r} (expected HOST:PORT)")
    return addresses


def leader_hint(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The ``corral-leader`` value of a call's trailing metadata: None when absent (not a standby's
    answer), "" when the standby knows no leader, else the leader's address."""
    for key, value in metadata or ():
        if key == LEADER_METADATA:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            text = text.strip()
            # A hint is followed blindly: take nothing that is not one plain address.
            return text if len(text) <= _MAX_ADDRESS and _ADDRESS.match(text) else ""
    return None


def peer_version(metadata: Iterable[tuple[str, Any]] | None) -> int:
    """The ``corral-protocol`` version in call metadata; :data:`UNVERSIONED` when absent, -1 when garbled."""
    for key, value in metadata or ():
        if key == PROTOCOL_METADATA:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            return int(text) if text.isdigit() and len(text) < 10 else -1
    return UNVERSIONED


def refusal(version: int, who: str) -> str | None:
    """None when ``version`` is accepted, else the FAILED_PRECONDITION message naming both versions."""
    if version >= MIN_PROTOCOL:
        return None
    spoken = "an unreadable protocol version" if version < 0 else f"protocol {version}"
    return (
        f"{who} speaks {spoken}, but this controller speaks protocol {PROTOCOL_VERSION} and accepts "
        f"{MIN_PROTOCOL} and newer: upgrade the {who} (see README, Upgrades)"
    )
