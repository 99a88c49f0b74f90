"""``nexmdm tokens`` and ``nexmdm keys``: secrets printed once, stored as hashes, never listed."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core import campaigns
from core.access import keys as admin_keys
from core.base.settings import Settings
from core.enrollment import tokens as credentials
from core.models import AdminKey, EnrollmentToken
from core.storage.types import utcnow
from tests.support.cli import Cli, one_error_line
from tests.support.fleet import seed_fleet


def test_token_create_defaults_and_secret_once(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    result = cli("tokens", "create")
    assert result.exit_code == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("nxe_") and len(secret) >= 43
    assert "shown only once" in result.stderr
    with session_factory() as db:
        token = db.query(EnrollmentToken).one()
        assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert token.max_uses == 1
        assert timedelta(minutes=59) < token.expires_at - utcnow() <= timedelta(hours=1)
    with session_factory.begin() as db:  # the printed secret is the real one
        assert credentials.find_enrollment_token(db, secret).id == token.id


def test_token_create_json(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    data = cli.json("tokens", "create", "--uses", "5", "--expires", "7d", "--note", "warehouse")
    assert data["max_uses"] == 5 and data["note"] == "warehouse" and data["state"] == "active"
    assert data["secret"].startswith("nxe_")
    with session_factory() as db:
        expires = db.get(EnrollmentToken, data["id"]).expires_at
    assert timedelta(days=6, hours=23) < expires - utcnow() <= timedelta(days=7)


def test_token_list_never_shows_secrets(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    created = cli.json("tokens", "create", "--note", "lab")
    with session_factory() as db:
        token_hash = db.get(EnrollmentToken, created["id"]).token_hash
    listed = cli("tokens", "list", "--json")
    table = cli("tokens", "list")
    for output in (listed.stdout, table.stdout):
        assert created["id"] in output
        assert created["secret"] not in output and token_hash not in output
    assert "lab" in table.stdout and "0/1" in table.stdout


def test_token_revoke(cli: Cli) -> None:
    created = cli.json("tokens", "create")
    assert cli.json("tokens", "revoke", created["id"])["state"] == "revoked"
    assert cli.json("tokens", "list", "--active") == {"items": []}
    assert [t["state"] for t in cli.json("tokens", "list")["items"]] == ["revoked"]
    missing = cli("tokens", "revoke", "enr_nope")
    assert missing.exit_code == 3
    assert "enr_nope" in one_error_line(missing)


def test_token_bad_values(cli: Cli) -> None:
    bad_duration = cli("tokens", "create", "--expires", "soon")
    assert bad_duration.exit_code == 2
    assert "--expires" in one_error_line(bad_duration)
    too_long = cli("tokens", "create", "--expires", "400d")
    assert too_long.exit_code == 2
    assert "365" in one_error_line(too_long)
    assert cli("tokens", "create", "--uses", "0").exit_code == 2


def test_key_lifecycle(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    created = cli("keys", "create", "--name", "ci-runner")
    assert created.exit_code == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("nxa_") and "shown only once" in created.stderr
    with session_factory() as db:
        key = db.query(AdminKey).one()
        assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    listed = cli("keys", "list")
    assert "ci-runner" in listed.stdout and secret not in listed.stdout and key.key_hash not in listed.stdout
    assert [k["name"] for k in cli.json("keys", "list")["items"]] == ["ci-runner"]

    duplicate = cli("keys", "create", "--name", "ci-runner")
    assert duplicate.exit_code == 4
    assert "already exists" in one_error_line(duplicate)

    refused = cli("keys", "revoke", "ci-runner", input="n\n")
    assert refused.exit_code == 1
    assert cli.json("keys", "list")["items"][0]["state"] == "active"
    assert cli.json("keys", "revoke", "ci-runner", "--yes")["state"] == "revoked"


def test_key_create_json_and_errors(cli: Cli) -> None:
    data = cli.json("keys", "create", "--name", "grafana")
    assert data["name"] == "grafana" and data["secret"].startswith("nxa_") and "key_hash" not in data
    bad = cli("keys", "create", "--name", "no spaces")
    assert bad.exit_code == 2
    assert "name" in one_error_line(bad)
    missing = cli("keys", "revoke", "ghost")
    assert missing.exit_code == 3
    assert "ghost" in one_error_line(missing)


def test_key_scope_expiry_and_last_use(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    created = cli(
        "keys", "create", "--name", "store42", "--role", "operator", "--scope", "store = 42", "--expires-in", "90d"
    )
    assert created.exit_code == 0, created.stderr
    assert "role operator@store=42" in created.stderr and (
        "expires in 89d 23h" in created.stderr or "expires in 90d" in created.stderr
    )
    data = cli.json("keys", "create", "--name", "forever", "--role", "viewer")
    assert data["scope"] is None and data["expires_at"] is None
    with session_factory.begin() as db:
        key = db.query(AdminKey).filter_by(name="store42").one()
        assert key.scope == "store=42"
        assert timedelta(days=89) < key.expires_at - utcnow() <= timedelta(days=90)
        admin_keys.record_admin_key_use(db, key.id, utcnow() - timedelta(minutes=5))
        db.query(AdminKey).filter_by(name="forever").update({"expires_at": utcnow() - timedelta(hours=1)})
    listed = cli("keys", "list")
    assert listed.exit_code == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "store42" in line)
    assert "store=42" in row
    assert "in 89d 23h" in row and "5m ago" in row and "active" in row
    other = next(line for line in listed.stdout.splitlines() if "forever" in line)
    assert "all devices" in other and "expired" in other and "1h ago" in other and "never" in other
    items = {k["name"]: k for k in cli.json("keys", "list")["items"]}
    assert items["forever"]["state"] == "expired" and items["store42"]["last_used_at"] is not None

    for args, word in (
        (("--expires-in", "soon"), "--expires-in"),
        (("--expires-in", "20000d"), "expires_in"),
        (("--scope", "store in"), "scope"),
        (("--scope", "all"), "scope"),
        (("--scope", "@state=online"), "@state"),
    ):
        bad = cli("keys", "create", "--name", "bad", *args)
        assert bad.exit_code == 2, args
        assert word in one_error_line(bad), args
    assert [k["name"] for k in cli.json("keys", "list")["items"]] == ["store42", "forever"]


def test_campaigns_show_names_the_scope_of_a_scoped_campaign(
    cli: Cli, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    seed_fleet(session_factory)
    with session_factory.begin() as db:
        _, made = campaigns.create_campaign(
            db, settings, idempotency_key="k", action="ping", selector="all", scope="store=42"
        )
    shown = cli("campaigns", "show", made["id"])
    assert shown.exit_code == 0, shown.stderr
    assert re.search(r"scope\s+│?\s*store=42", shown.stdout), shown.stdout
    assert cli.json("campaigns", "show", made["id"])["targeted"] == 2
