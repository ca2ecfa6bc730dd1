"""Start-up of the access machinery: the secret key, the first admin token, audit retention.

corral controller --auth --admin-token-file /var/lib/corral/admin.token --secret-key-file /etc/corral/secret.key
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from corral.controller.core.access import TokenRecord
from corral.controller.core.machine import Machine
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox, hash_token, new_token, new_token_id, write_private

__all__ = ["bootstrap_admin_token", "prune_audit_forever", "use_secret_box"]

log = logging.getLogger("corral.controller.auth")

_PRUNE_EVERY_S = 3600.0


def use_secret_box(runtime: Runtime, box: SecretBox | None) -> None:
    """Let the state machine decrypt secrets for dispatch; warn about any that this key cannot open."""
    if box is None:
        return
    access = runtime.machine.access
    access.decrypt = box.decrypt
    for (namespace, name), secret in access.secrets.items():
        try:
            box.decrypt(secret.ciphertext)
        except ValueError:
            log.error("secret %s/%s does not decrypt with this key file; tasks using it will fail", namespace, name)


async def bootstrap_admin_token(runtime: Runtime, path: Path) -> bool:
    """On a first start with auth on: create an admin token and write it to ``path`` (0600).

    Does nothing when a live admin token exists already. Returns whether one was written.
    """
    text = new_token()
    token_hash = hash_token(text)

    def create(machine: Machine, now: float) -> bool:
        access = machine.access
        if access.has_admin_token(now):
            return False
        access.add_token(
            TokenRecord(
                id=new_token_id(),
                hash=token_hash,
                kind="client",
                role="admin",
                description="first admin token (written at first start)",
                created_at=now,
                created_by="controller",
            )
        )
        return True

    # Written before the record is committed would leave a useless file on a failed commit; written
    # after, a crash in between leaves an admin token nobody holds (the next start makes another
    # only if no live one exists, so the operator then revokes it with a token from a restart).
    created: bool = await runtime.call(create)
    if created:
        write_private(path, (text + "\n").encode())
        log.warning("auth is on and there was no admin token: wrote the first one to %s (mode 0600)", path)
    return created


async def prune_audit_forever(runtime: Runtime, retain_s: float) -> None:
    """Drop audit records older than ``retain_s``, now and every hour (cancel to stop)."""
    while True:
        with contextlib.suppress(Exception):
            await runtime.call(lambda m, now: m.access.prune_audit(now - retain_s))
        await asyncio.sleep(_PRUNE_EVERY_S)
