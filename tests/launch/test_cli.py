"""The ``rarefit`` command line: migrate and API-key management, in process."""

from __future__ import annotations

import pytest

from launch.cli import build_parser, main
from service.db import make_engine, make_session_factory
from service.repository import tenants


@pytest.fixture
def cli_env(sqlite_settings, monkeypatch):
    """RAREFIT_DATA_DIR pointing at an empty temporary data dir (the CLI reads the environment)."""
    settings = sqlite_settings()
    monkeypatch.setenv("RAREFIT_DATA_DIR", str(settings.data_dir))
    return settings


def _authenticates(settings, plaintext: str) -> bool:
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            return tenants.authenticate(session, plaintext=plaintext) is not None
    finally:
        engine.dispose()


def test_keys_need_a_migrated_database(cli_env, capsys):
    assert main(["keys", "list"]) == 2
    captured = capsys.readouterr()
    assert "rarefit migrate" in captured.err and captured.out == ""


def test_keys_create_list_revoke(cli_env, capsys):
    assert main(["migrate"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--tenant", "acme"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("rf_") and "\n" not in key and _authenticates(cli_env, key)
    assert main(["keys", "create", "--tenant", "other"]) == 0
    other = capsys.readouterr().out.strip()

    assert main(["keys", "list", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    assert key not in listing and other not in listing
    header, *rows = listing.strip().splitlines()
    assert header.split("\t") == ["id", "tenant", "prefix", "created", "revoked"]
    assert len(rows) == 1
    key_id, tenant, prefix, _created, revoked = rows[0].split("\t")
    assert tenant == "acme" and prefix == key[:10] and revoked == "-"

    assert main(["keys", "revoke", key_id]) == 0
    assert not _authenticates(cli_env, key) and _authenticates(cli_env, other)
    capsys.readouterr()
    assert main(["keys", "list"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert len(rows) == 2 and sum(row.split("\t")[4] != "-" for row in rows) == 1
    assert main(["keys", "revoke", key_id]) == 1  # already revoked
    assert "no live API key" in capsys.readouterr().err


def test_parser_rejects_missing_arguments(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["keys", "create"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    args = build_parser().parse_args(["api", "--port", "9000", "--workers", "2"])
    assert (args.port, args.workers, args.host) == (9000, 2, None)


@pytest.mark.parametrize("argv", [["serve"], ["api"], ["worker"], ["migrate"], ["reap"], ["keys", "list"]])
def test_every_verb_names_its_handler(argv):
    args = build_parser().parse_args(argv)
    assert callable(args.handler) and args.handler.__name__ == f"_{argv[0]}"
