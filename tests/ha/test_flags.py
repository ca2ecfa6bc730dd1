"""The controller's HA flags: a PostgreSQL URL, the advertised address and the lease ttl; bad ones refused."""

from __future__ import annotations

import pytest

from corral.controller.daemon import EXIT_USAGE, parse_args


def test_the_ha_flags_parse() -> None:
    args = parse_args(["--store", "postgresql://corral@db:5432/corral", "--advertise", "ctl-1:7070"])
    assert (args.store, args.advertise, args.lease_ttl) == ("postgresql://corral@db:5432/corral", "ctl-1:7070", 5.0)
    assert parse_args([]).store is None  # SQLite stays the default


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "mysql://x"], "--store: "),
        (["--advertise", "no-port"], "--advertise wants host:port"),
        (["--lease-ttl", "0"], "--lease-ttl must be between"),
        (["--lease-ttl", "nan"], "--lease-ttl must be between"),
    ],
)
def test_bad_ha_flags_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err
