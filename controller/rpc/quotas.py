"""The fair-share admin calls' wire side: validate a namespace's weight and quotas, and show usage.

Kept apart from :mod:`admin` (which only delegates here) so the admin module stays one job.
"""

from __future__ import annotations

import math

from corral.controller.core import requests as rq
from corral.controller.core.access import Namespace
from corral.controller.core.fairshare import Quota, QuotaRow, quota_of
from corral.controller.errors import InvalidArgument, PermissionDenied
from corral.controller.rpc.identity import current_principal
from corral.v1 import admin_pb2 as pb

__all__ = ["MAX_WEIGHT", "quota_message", "quota_request", "quota_usage"]

#: Largest weight and limits accepted (beyond any real cluster; keeps shares finite and printable).
MAX_WEIGHT = 1_000_000.0
_MAX_CPU = 1_000_000.0
_MAX_MEMORY_MB = 1 << 40
_MAX_GPU = 1_000_000
_MAX_RUNNING = 10_000_000


def quota_request(name: str, quota: pb.NamespaceQuota) -> rq.SetNamespaceQuotaRequest:
    """The core request for a SetNamespaceQuota call, or INVALID_ARGUMENT naming the bad field.

    Only an admin covering every namespace may set one: a namespace-scoped admin raising its own
    namespace's weight or quota would defeat the fairness between tenants.
    """
    principal = current_principal()
    if principal.namespaces:
        raise PermissionDenied(f"{principal.describe()} covers only some namespaces; quotas need an unscoped admin")
    weight = quota.weight
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise InvalidArgument.field("quota.weight", f"must be a number > 0 and <= {MAX_WEIGHT:g}")
    if not (math.isfinite(quota.max_cpu) and 0 <= quota.max_cpu <= _MAX_CPU):
        raise InvalidArgument.field("quota.max_cpu", f"must be a number >= 0 and <= {_MAX_CPU:g} (0: no limit)")
    for field, value, limit in (
        ("max_memory_mb", quota.max_memory_mb, _MAX_MEMORY_MB),
        ("max_gpu", quota.max_gpu, _MAX_GPU),
        ("max_running", quota.max_running, _MAX_RUNNING),
    ):
        if not 0 <= value <= limit:
            raise InvalidArgument.field(f"quota.{field}", f"must be >= 0 and <= {limit} (0: no limit)")
    return rq.SetNamespaceQuotaRequest(
        name, weight, quota.max_cpu, quota.max_memory_mb, quota.max_gpu, quota.max_running
    )


def quota_message(namespace: Namespace) -> pb.NamespaceQuota:
    """A namespace record's weight and quotas on the wire."""
    return _message(quota_of(namespace))


def _message(q: Quota) -> pb.NamespaceQuota:
    return pb.NamespaceQuota(
        weight=q.weight, max_cpu=q.max_cpu, max_memory_mb=q.max_memory_mb, max_gpu=q.max_gpu, max_running=q.max_running
    )


def quota_usage(row: QuotaRow) -> pb.QuotaUsage:
    """One namespace's usage against its quota, and its shares, on the wire."""
    q = row.quota
    return pb.QuotaUsage(
        namespace=row.namespace,
        quota=pb.NamespaceQuota(
            weight=q.weight,
            max_cpu=q.max_cpu,
            max_memory_mb=q.max_memory_mb,
            max_gpu=q.max_gpu,
            max_running=q.max_running,
        ),
        cpu=row.usage.cpu,
        memory_mb=row.usage.memory_mb,
        gpu=int(row.usage.gpu),
        running=int(row.usage.slots),
        dominant_share=row.dominant_share,
        weighted_share=row.weighted_share,
    )
