"""Who an agent is: its Hello bound to the credential of the stream that carries it.

With auth off (the plaintext loopback default, principal ``dev``) an agent is trusted to name
itself, as before. With auth on, the agent is the identity of its credential (a client
certificate or a join credential): its Hello must carry that name, and its labels, agent types and
namespaces come from the credential's grant, never from the Hello, so a fake or compromised agent
cannot claim a label to attract work meant for others.
"""

from __future__ import annotations

import dataclasses
import logging

from corral.controller.core.events import AgentHello
from corral.controller.errors import PermissionDenied
from corral.controller.rpc.identity import Principal

__all__ = ["DEFAULT_AGENT_TYPES", "bind_hello"]

log = logging.getLogger("corral.controller.gateway")

#: what an agent credential without an ``agent_types`` grant may run
DEFAULT_AGENT_TYPES = ("shell", "python")


def bind_hello(hello: AgentHello, principal: Principal) -> AgentHello:
    """The Hello as it takes effect for ``principal``; raises PermissionDenied when they disagree.

    ``dev`` (auth off) and ``admin`` callers are trusted as they say. An agent credential must
    name the agent of the Hello; the effective agent types are those the grant allows (shell and
    python when it lists none) that the agent also offers.
    """
    if principal.kind == "dev" or principal.role == "admin":
        return hello
    if principal.kind != "agent" and principal.role != "agent":
        raise PermissionDenied(
            f"AgentGateway.Connect needs an agent credential; {principal.describe()} "
            f"(role {principal.role or 'none'}) is not one"
        )
    for claimed in (hello.agent_id, hello.name):
        if claimed != principal.name:
            raise PermissionDenied(f"this credential is agent {principal.name!r}; Hello says {claimed!r}")
    grant = principal.grant
    if hello.labels and dict(hello.labels) != dict(grant.labels):
        # Not refused: an agent started with --label keeps working, but only its grant counts.
        log.warning(
            "agent %s claims labels %s; its credential grants %s, which are used",
            principal.name,
            dict(hello.labels),
            dict(grant.labels),
        )
    allowed = grant.agent_types or DEFAULT_AGENT_TYPES
    types = tuple(t for t in hello.agent_types if t in allowed)
    return dataclasses.replace(hello, labels=dict(grant.labels), agent_types=types, namespaces=grant.namespaces)
