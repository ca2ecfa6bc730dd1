"""The figures of a bench run as the JSON line and the table: plain and TLS columns, targets, suffixes.

Pure functions of the medians, so they are unit-tested without running anything. A figure's key is
its base name (``noop_tasks_per_s``), plus ``_tls`` when measured with TLS + mutual TLS + auth, plus
``_pg`` when the controllers ran on PostgreSQL (``noop_tasks_per_s_tls_pg``).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "PG_SUFFIX",
    "TLS_RATIO",
    "TLS_RATIO_TARGET",
    "TLS_SUFFIX",
    "Figure",
    "Row",
    "add_tls_ratio",
    "base_key",
    "fmt",
    "json_figures",
    "rows",
    "verdict",
]

#: figure -> (workload, unit, target or None when the issue sets none, True when higher is better)
Figure = tuple[str, str, float | None, bool]
#: figure, measured, target, verdict, measured with TLS, verdict with TLS
Row = tuple[str, str, str, str, str, str]

TLS_SUFFIX = "_tls"
PG_SUFFIX = "_pg"
#: TLS throughput over plaintext throughput (the medians): the cost of TLS on the wire.
TLS_RATIO = "noop_tls_ratio"
TLS_RATIO_TARGET = 0.85  # "within 15%"
_RATIO_OF = "noop_tasks_per_s"


def base_key(key: str) -> str:
    """``noop_tasks_per_s_tls_pg`` -> ``noop_tasks_per_s``."""
    return key.removesuffix(PG_SUFFIX).removesuffix(TLS_SUFFIX)


def fmt(value: float) -> str:
    """A figure for the table: thousands separators from 100, 3 significant decimals under 1."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def add_tls_ratio(figures: Mapping[str, float]) -> dict[str, float]:
    """The figures plus ``noop_tls_ratio`` (noop with TLS / noop without) when both were measured."""
    out = dict(figures)
    plain, tls = figures.get(_RATIO_OF), figures.get(_RATIO_OF + TLS_SUFFIX)
    if plain and tls is not None:
        out[TLS_RATIO] = tls / plain
    return out


def json_figures(figures: Mapping[str, float], table: Mapping[str, Figure], store_suffix: str = "") -> dict[str, float]:
    """Every known figure in the table's order (each plain one, then its TLS twin), with the store suffix."""
    out: dict[str, float] = {}
    for key in table:
        for variant in (key, key + TLS_SUFFIX):
            if variant in figures:
                out[variant + store_suffix] = figures[variant]
    return out


def verdict(value: float, target: float | None, higher: bool) -> str:
    """``ok`` or ``MISS`` against the target ("" without one)."""
    if target is None:
        return ""
    return "ok" if (value >= target if higher else value <= target) else "MISS"


def _target(target: float | None, higher: bool) -> str:
    return "-" if target is None else f"{'>=' if higher else '<='} {fmt(target)}"


def rows(figures: Mapping[str, float], table: Mapping[str, Figure], store_suffix: str = "") -> list[Row]:
    """One row per figure measured plainly, with TLS, or both; the TLS column next to the plain one.

    A figure with TLS is held to the same target as without (the issue's targets hold with every
    feature on), except ``noop_tasks_per_s`` with TLS when both ran: within 15% of the plain one.
    """
    out: list[Row] = []
    for key, (_, unit, target, higher) in table.items():
        plain, tls = figures.get(key), figures.get(key + TLS_SUFFIX)
        if plain is None and tls is None:
            continue
        measured = "" if plain is None else f"{fmt(plain)} {unit}".strip()
        plain_verdict = "" if plain is None else verdict(plain, target, higher)
        with_tls = tls_verdict = ""
        if tls is not None:
            with_tls = f"{fmt(tls)} {unit}".strip()
            if key == _RATIO_OF and plain:
                ratio = tls / plain
                tls_verdict = f"{verdict(ratio, TLS_RATIO_TARGET, True)} ({ratio:.2f}x)"
            else:
                tls_verdict = verdict(tls, target, higher)
        out.append((key + store_suffix, measured, _target(target, higher), plain_verdict, with_tls, tls_verdict))
    return out
