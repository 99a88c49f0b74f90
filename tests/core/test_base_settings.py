"""Settings: read from NEXMDM_* variables, validated, and every one documented."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from core.base.errors import InvalidArgument
from core.base.settings import Settings, env_name, get_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [env_name(f.name) for f in fields(Settings) if f"`{env_name(f.name)}`" not in text]
    assert missing == []


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    settings = get_settings({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.heartbeat_bucket_seconds == 10
    assert settings.slow_heartbeat_ms == 150
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("nexmdm.db")
    assert settings.actions == () and settings.location_retention_days == 7  # an operator's own actions: none
    from core.commands.catalogue import catalogue_for

    assert {"ring", "install_apk", "lost_mode", "wipe"} <= set(catalogue_for(settings).names())


def test_environment_is_read_and_postgres_urls_normalized() -> None:
    settings = get_settings(
        {
            "NEXMDM_DATABASE_URL": "postgresql://u:pw@db.example/nexmdm",
            "NEXMDM_HEARTBEAT_BUCKET_SECONDS": "30",
            "NEXMDM_SLOW_HEARTBEAT_MS": "99.5",
            "NEXMDM_ACTIONS": "ping, wipe",
            "NEXMDM_DATA_DIR": "/srv/nexmdm",
        }
    )
    assert settings.database_url == "postgresql+psycopg2://u:pw@db.example/nexmdm"
    assert settings.heartbeat_bucket_seconds == 30
    assert settings.slow_heartbeat_ms == 99.5
    assert settings.actions == ("ping", "wipe")
    assert settings.apk_dir == Path("/srv/nexmdm/apks")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NEXMDM_HEARTBEAT_BUCKET_SECONDS": "ten"}, "NEXMDM_HEARTBEAT_BUCKET_SECONDS"),
        ({"NEXMDM_HEARTBEAT_BUCKET_SECONDS": "0"}, "at least 1"),
        ({"NEXMDM_HEARTBEAT_RETENTION_DAYS": "-1"}, "must not be negative"),
        ({"NEXMDM_DEVICE_ONLINE_SECONDS": "600", "NEXMDM_DEVICE_OFFLINE_SECONDS": "60"}, "OFFLINE"),
        ({"NEXMDM_FORWARDED_ALLOW_IPS": "10.0.0.1,lb.example"}, "NEXMDM_FORWARDED_ALLOW_IPS"),
        ({"NEXMDM_REDIS_URL": "127.0.0.1:6379"}, "NEXMDM_REDIS_URL"),
        ({"NEXMDM_DATABASE_READ_URL": "postgresql://replica/nexmdm"}, "PostgreSQL replica"),  # SQLite primary
        ({"NEXMDM_DATABASE_POOL_MODE": "statement"}, "NEXMDM_DATABASE_POOL_MODE"),
        ({"NEXMDM_APK_STORAGE": "s3"}, "NEXMDM_APK_STORAGE"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        get_settings(env)


def test_overrides_win_over_environment() -> None:
    settings = get_settings({"NEXMDM_DATABASE_URL": "sqlite:///a.db"}, database_url="sqlite:///b.db")
    assert settings.database_url == "sqlite:///b.db"
