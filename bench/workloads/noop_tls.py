"""The noop workload with TLS, mutual TLS and auth: ``noop_tasks_per_s_tls`` (and its peak RSS).

``make bench`` measures this in its TLS column already (noop, roundtrip and dag run a second time
with TLS); this name stays so that ``--only noop,noop_tls`` compares the two back to back. The run
reports ``noop_tls_ratio`` (TLS over plaintext, medians; the issue asks for within 15%).
"""

from __future__ import annotations

from bench.workloads.noop import run_tls as run

__all__ = ["run"]
