"""Layered settings: flag > environment > config file > default, for the controller, the agent and the CLI.

Also the store URLs (``--store``, ``--db``, ``--memory``) and where state lives (platformdirs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.cli import config_from_args
from corral.agent.cli import parse_args as agent_args
from corral.controller.flags import parse_args as controller_args
from corral.controller.store.factory import StoreUrlError, parse_store_url, sqlite_url
from corral.dirs import agent_work_dir, config_dir, controller_db, state_dir


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer settings leak in: empty config dir, no CORRAL_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith("CORRAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# -- the controller ---------------------------------------------------------------------------


def test_controller_flag_beats_env_beats_file_beats_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert controller_args([]).kill_grace == 10.0  # default
    file = tmp_path / "controller.toml"
    file.write_text('kill_grace = 4\nlisten = "127.0.0.1:9000"\nlog_level = "debug"\n')
    from_file = controller_args(["--config", str(file)])
    assert (from_file.kill_grace, from_file.listen, from_file.log_level) == (4.0, "127.0.0.1:9000", "debug")
    monkeypatch.setenv("CORRAL_CONTROLLER_KILL_GRACE", "5")
    assert controller_args(["--config", str(file)]).kill_grace == 5.0  # env beats file
    flagged = controller_args(["--config", str(file), "--kill-grace", "6"])
    assert flagged.kill_grace == 6.0  # flag beats env
    assert flagged.listen == "127.0.0.1:9000"  # each field on its own: the file still gives the rest


def test_controller_reads_the_default_config_file_and_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = config_dir() / "controller.yaml"
    default.parent.mkdir(parents=True)
    default.write_text("prefetch: 3\nno_such_setting: 1\n")
    with pytest.raises(SystemExit) as exited:
        controller_args([])
    assert exited.value.code == 2
    default.write_text("prefetch: 3\ndeadline_scheduling: false\n")
    settings = controller_args([])
    assert settings.prefetch == 3 and settings.deadline_scheduling is False
    monkeypatch.setenv("CORRAL_CONTROLLER_CONFIG", str(tmp_path / "other.toml"))
    (tmp_path / "other.toml").write_text("prefetch = 5\n")
    assert controller_args([]).prefetch == 5  # $CORRAL_CONTROLLER_CONFIG beats the default location


def test_controller_errors_name_the_layer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "c.toml"
    file.write_text('lease = "soon"\n')
    with pytest.raises(SystemExit):
        controller_args(["--config", str(file)])
    assert f"lease in {file}" in capsys.readouterr().err
    monkeypatch.setenv("CORRAL_CONTROLLER_MAX_AGENTS", "many")
    with pytest.raises(SystemExit):
        controller_args([])
    assert "$CORRAL_CONTROLLER_MAX_AGENTS" in capsys.readouterr().err
    monkeypatch.delenv("CORRAL_CONTROLLER_MAX_AGENTS")
    monkeypatch.setenv("CORRAL_CONTROLLER_LEASE", "40")
    with pytest.raises(SystemExit):  # checks across fields see every layer: 40 s lease, 30 s fence
        controller_args([])
    assert "--fence-after (30 s) must be longer than --lease (40 s)" in capsys.readouterr().err
    file.write_text("[broken\n")
    with pytest.raises(SystemExit):
        controller_args(["--config", str(file)])
    assert "not valid TOML" in capsys.readouterr().err


def test_controller_legacy_log_format_variable_is_below_the_prefixed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LOG_FORMAT", "json")
    assert controller_args([]).log_format == "json"
    monkeypatch.setenv("CORRAL_CONTROLLER_LOG_FORMAT", "text")
    assert controller_args([]).log_format == "text"
    assert controller_args(["--log-format", "json"]).log_format == "json"


def test_store_urls_and_their_aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert controller_args([]).store_url == sqlite_url(controller_db())
    assert controller_db() == tmp_path / "state" / "corral" / "controller.db"  # $XDG_STATE_HOME honoured
    db = tmp_path / "x.db"
    assert controller_args(["--db", str(db)]).parsed_store.path == db
    assert controller_args(["--memory"]).memory
    assert controller_args(["--store", "memory://"]).memory
    monkeypatch.setenv("CORRAL_CONTROLLER_STORE", "memory://")
    assert controller_args(["--db", str(db)]).parsed_store.path == db  # --db is a flag: beats the env
    with pytest.raises(SystemExit):
        controller_args(["--db", str(db), "--memory"])
    with pytest.raises(SystemExit):
        controller_args(["--store", "mysql://x"])
    pg = controller_args(["--store", "postgresql://corral:secret@db:5432/corral"]).parsed_store
    assert (pg.kind, pg.dsn) == ("postgresql", "postgresql://corral:secret@db:5432/corral")
    assert "secret" not in pg.display()
    assert controller_args(["--db", "postgresql://u@db/corral"]).parsed_store.dsn == "postgresql://u@db/corral"


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("sqlite:///var/lib/corral/c.db", "sqlite", "/var/lib/corral/c.db"),
        ("sqlite:rel/c.db", "sqlite", str(Path("rel/c.db").absolute())),
        ("memory://", "memory", None),
        ("memory:", "memory", None),
        ("postgres://u@h/db", "postgresql", None),
    ],
)
def test_store_url_parsing(url: str, kind: str, path: str | None) -> None:
    parsed = parse_store_url(url)
    assert parsed.kind == kind
    assert (str(parsed.path) if parsed.path else None) == path


@pytest.mark.parametrize("url", ["sqlite://host/c.db", "sqlite:", "sqlite:///", "c.db", "memory://x", "postgresql:x"])
def test_bad_store_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreUrlError):
        parse_store_url(url)


def test_the_postgresql_branch_says_what_is_missing() -> None:
    import importlib.util

    from corral.controller.store.factory import open_store

    if importlib.util.find_spec("corral.controller.store.postgres") is not None:
        pytest.skip("the PostgreSQL store is part of this checkout")
    with pytest.raises(StoreUrlError, match="no PostgreSQL store"):
        open_store("postgresql://u@127.0.0.1:1/db")


# -- the agent --------------------------------------------------------------------------------


def test_agent_flag_beats_env_beats_file_beats_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert agent_args([]).drain_grace == 30.0
    file = tmp_path / "agent.toml"
    file.write_text(
        'drain_grace = 4\ncontroller = "ctl:7070"\npython_allow = ["pkg"]\n'
        '[labels]\nzone = "eu"\n[agent_types.r]\ncommand = ["Rscript", "-e"]\n'
    )
    settings = agent_args(["--config", str(file)])
    assert (settings.drain_grace, settings.controller, settings.python_allow) == (4.0, "ctl:7070", ("pkg",))
    monkeypatch.setenv("CORRAL_AGENT_DRAIN_GRACE", "5")
    monkeypatch.setenv("CORRAL_AGENT_PYTHON_ALLOW", "a,b")
    monkeypatch.setenv("CORRAL_AGENT_LABELS", '{"rack": "7"}')
    settings = agent_args(["--config", str(file)])
    assert (settings.drain_grace, settings.python_allow) == (5.0, ("a", "b"))
    settings = agent_args(["--config", str(file), "--drain-grace", "6", "--label", "zone=us"])
    assert settings.drain_grace == 6.0
    config = config_from_args(settings)
    assert config.labels == {"zone": "us", "rack": "7"}  # tables merge key by key; the flag wins for zone
    assert config.declared_types == {"r": ("Rscript", "-e")}
    assert config.controller == "ctl:7070"


def test_agent_default_config_file_and_legacy_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = config_dir() / "agent.toml"
    default.parent.mkdir(parents=True)
    default.write_text('ca = "/from/file.pem"\nslots = 3\n')
    assert (agent_args([]).slots, str(agent_args([]).ca)) == (3, "/from/file.pem")
    monkeypatch.setenv("CORRAL_CA", "/legacy.pem")
    assert str(agent_args([]).ca) == "/legacy.pem"  # the old variable beats the file
    monkeypatch.setenv("CORRAL_AGENT_CA", "/prefixed.pem")
    assert str(agent_args([]).ca) == "/prefixed.pem"  # and the prefixed one beats the old one
    assert str(agent_args(["--ca", "/flag.pem"]).ca) == "/flag.pem"
    monkeypatch.setenv("CORRAL_AGENT_SLOTS", "0")
    with pytest.raises(SystemExit) as exited:
        agent_args([])
    assert exited.value.code == 2


def test_agent_file_labels_are_checked_like_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("labels:\n  'bad key': v\n")
    with pytest.raises(SystemExit):
        agent_args(["--config", str(file)])
    assert "not a valid name" in capsys.readouterr().err


def test_state_directories_come_from_one_place(tmp_path: Path) -> None:
    from corral.agent.config import default_work_dir
    from corral.controller.cli.daemons import state_dir as dev_state
    from corral.controller.daemon import default_db_path

    assert state_dir() == tmp_path / "state" / "corral"
    assert default_db_path() == controller_db() == state_dir() / "controller.db"
    assert default_work_dir("n1") == agent_work_dir("n1") == state_dir() / "agents" / "n1"
    assert dev_state() == state_dir()


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_flag_beats_env_beats_context_beats_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from corral.controller.cli.contexts import Context, ContextFile, save
    from corral.controller.cli.settings import resolve
    from corral.controller.sdk.client import DEFAULT_ADDRESS

    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "cli.yaml"))
    assert resolve().address == DEFAULT_ADDRESS
    save(ContextFile("prod", {"prod": Context(address="ctx:7070", token="ctx-token")}))
    assert (resolve().address, resolve().token) == ("ctx:7070", "ctx-token")
    monkeypatch.setenv("CORRAL_ADDRESS", "env:7070")
    assert (resolve().address, resolve().token) == ("env:7070", "ctx-token")  # field by field
    assert resolve("flag:7070").address == "flag:7070"
    assert resolve(token="flag-token").token == "flag-token"
