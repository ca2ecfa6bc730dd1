"""AgentGateway.Join: an agent exchanges a join token for a credential of its own.

The join token (role ``agent``) has a TTL, a glob its name must match and a use count; the
credential issued here is random, stored as a hash, bound to the agent's name and carries the
join token's grant (labels, agent types, namespaces), so an agent cannot claim labels it was not
given. Revoking the join token also revokes every credential issued with it. The call is audited
in the same commit that records the credential.
"""

from __future__ import annotations

import re

from corral.controller.core.access import AuditEntry
from corral.controller.core.requests import JoinRequest
from corral.controller.errors import InvalidArgument, Unauthenticated
from corral.controller.rpc.auth import record_audit
from corral.controller.runtime import Runtime
from corral.controller.secretbox import hash_token, new_token, new_token_id
from corral.controller.spec import NAME_PATTERN
from corral.v1 import agent_pb2 as pb

__all__ = ["join"]

_METHOD = "/corral.v1.AgentGateway/Join"
_NAME = re.compile(NAME_PATTERN)
_MAX_NAME = 128


async def join(runtime: Runtime, request: pb.JoinRequest) -> pb.JoinResponse:
    """Check the join token, its name pattern and uses left; issue and store the agent's credential."""
    name = request.name
    if not name or len(name) > _MAX_NAME or not _NAME.match(name):
        raise InvalidArgument.field("name", f"an agent name: 1-{_MAX_NAME} letters, digits, '_', '.', '-'")
    if not request.join_token or len(request.join_token) > 512:
        raise InvalidArgument.field("join_token", "required (make one with `corral token create --role agent`)")
    join_hash = hash_token(request.join_token)
    credential = new_token()
    credential_hash = hash_token(credential)

    event = JoinRequest(join_hash, name, new_token_id(), credential_hash, _METHOD)
    try:
        outcome = await runtime.handle(event)
    except Unauthenticated as exc:
        entry = AuditEntry(runtime.clock(), "anonymous", "", _METHOD, name, "", "UNAUTHENTICATED", str(exc))
        record_audit(runtime, entry, store=False)
        raise
    if isinstance(outcome, tuple):
        who, refusal = outcome
        record_audit(
            runtime, AuditEntry(runtime.clock(), who, "agent", _METHOD, name, "", "PERMISSION_DENIED", refusal.message)
        )
        raise refusal
    record = outcome
    record_audit(
        runtime,
        AuditEntry(runtime.clock(), record.created_by, "agent", _METHOD, name, "", "OK", f"credential {record.id}"),
        store=False,
    )
    return pb.JoinResponse(
        agent_id=name,
        credential=credential,
        labels=dict(record.labels),
        agent_types=record.agent_types,
        namespaces=record.namespaces,
    )
