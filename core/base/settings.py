"""One settings object, read from ``NEXMDM_*`` environment variables.

Every field is documented in ``docs/configuration.md``; a test keeps the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from core.base.errors import InvalidArgument

#: an operator's own actions beside the built-in catalogue (``core.commands.catalogue``): none by default
DEFAULT_ACTIONS: tuple[str, ...] = ()
#: actions that must wake a dozing device; FCM deprioritizes apps whose high-priority pushes show nothing
DEFAULT_HIGH_PRIORITY_ACTIONS = ("ring", "lock", "reboot", "lost_mode")


def default_data_dir() -> Path:
    """Where the embedded database and APK files live unless configured otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "nexmdm"


def normalize_database_url(url: str) -> str:
    """Make ``postgresql://`` mean psycopg2 (SQLAlchemy 2.1 would otherwise pick psycopg 3), and a libpq
    multi-host URL (``postgresql://h1:5432,h2:5432/nexmdm``) one that SQLAlchemy parses (the hosts in
    ``?host=h1:5432&host=h2:5432``, which psycopg2 hands to libpq as ``host=h1,h2 port=5432,5432``)."""
    url = url.strip()
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg2://" + url[len(prefix) :]
    return _hosts_in_query(url) if url.startswith("postgresql") else url


def _hosts_in_query(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or "," not in hosts:
        return url
    path, question, query = tail.partition("?")
    params = "&".join(f"host={host}" for host in hosts.split(",") if host)
    return f"{scheme}://{userinfo}{at}{slash or '/'}{path}?{params}{'&' + query if question and query else ''}"


def check_forwarded_allow_ips(value: str) -> str:
    """The proxies whose ``X-Forwarded-For``/``-Proto`` uvicorn trusts: ``*`` or addresses and networks."""
    import ipaddress

    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidArgument(
                f"NEXMDM_FORWARDED_ALLOW_IPS: {item!r} is not an IP address, a network (10.0.0.0/8) or *",
                field="forwarded_allow_ips",
            ) from None
    return ",".join(items)


@dataclass(frozen=True)
class Settings:
    """NexMDM configuration. Field ``foo_bar`` is read from ``NEXMDM_FOO_BAR``."""

    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    apk_dir: Path | None = None
    heartbeat_bucket_seconds: int = 10
    slow_heartbeat_ms: float = 150.0
    heartbeat_retention_days: int = 30
    dispatch_retention_days: int = 90
    download_retention_days: int = 365
    campaign_retention_days: int = 365
    audit_retention_days: int = 365
    webhook_retention_days: int = 30
    app_change_retention_days: int = 90
    inventory_serial: bool = False
    approval_retention_days: int = 365
    #: a device whose effective profile changed is ``pending`` this long before it counts as noncompliant
    profile_grace_seconds: int = 900
    #: a noncompliant ``required`` app with a ``build`` gets its ``install_apk`` on its own (core.profiles.remediation)
    remediation: bool = True
    #: at most this many remediation commands per device per day (UTC), over every build
    remediation_per_device_day: int = 3
    webhook_allow_private: bool = False
    webhook_max_attempts: int = 12
    webhook_backoff_seconds: float = 10.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_timeout_seconds: float = 10.0
    webhook_response_max_bytes: int = 4096
    webhook_concurrency: int = 4
    cleanup_batch_size: int = 5000
    cleanup_lock_timeout_ms: int = 1000
    cleanup_statement_timeout_ms: int = 30000
    cleanup_retries: int = 5
    cleanup_batch_pause_ms: int = 100
    actions: tuple[str, ...] = DEFAULT_ACTIONS
    action_schemas: str = ""
    location_retention_days: int = 7
    selector_statement_timeout_ms: int = 2000
    device_online_seconds: int = 300
    device_offline_seconds: int = 3600
    sqlite_busy_timeout_ms: int = 30000
    db_pool_size: int = 10
    migration_lock_timeout_ms: int = 5000
    migration_retries: int = 5
    migration_backoff_ms: int = 1000
    log_level: str = "INFO"
    auth_failure_limit: int = 20
    auth_failure_window_seconds: int = 60
    heartbeat_rate_per_minute: int = 60
    heartbeat_burst: int = 10
    apk_upload_max_mb: int = 512
    apk_upload_timeout_seconds: float = 600.0
    request_body_timeout_seconds: float = 30.0
    public_url: str = ""
    fcm_credentials: Path | None = None
    fcm_project_id: str = ""
    fcm_endpoint: str = "https://fcm.googleapis.com"
    fcm_max_attempts: int = 5
    fcm_backoff_seconds: float = 1.0
    fcm_backoff_max_seconds: float = 300.0
    fcm_timeout_seconds: float = 10.0
    delivery_lease_seconds: int = 30
    delivery_poll_seconds: float = 0.5
    fcm_max_per_minute: int = 600_000
    fcm_high_priority_actions: tuple[str, ...] = DEFAULT_HIGH_PRIORITY_ACTIONS
    delivery_batch_size: int = 500
    delivery_concurrency: int = 256
    command_ttl_seconds: int = 86400
    destructive_delay_seconds: int = 600
    allow_self_approval: bool = False
    delivery_in_server: bool = True
    campaign_max_targets: int = 0
    forwarded_allow_ips: str = "127.0.0.1"
    redis_url: str = ""
    redis_key_prefix: str = "nexmdm:"
    database_read_url: str = ""
    database_pool_mode: str = "session"
    database_read_max_lag_seconds: float = 30.0
    apk_storage: str = ""
    console_idle_minutes: int = 30
    console_session_hours: int = 12
    console_retention_days: int = 1
    console_secret: str = ""
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_roles: str = ""

    def __post_init__(self) -> None:
        url = self.database_url or f"sqlite:///{Path(self.data_dir) / 'nexmdm.db'}"
        object.__setattr__(self, "database_url", normalize_database_url(url))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "apk_dir", Path(self.apk_dir) if self.apk_dir else self.data_dir / "apks")
        if self.fcm_credentials:
            object.__setattr__(self, "fcm_credentials", Path(self.fcm_credentials).expanduser())
        for name in (
            "heartbeat_bucket_seconds",
            "cleanup_batch_size",
            "cleanup_lock_timeout_ms",
            "cleanup_statement_timeout_ms",
            "db_pool_size",
            "fcm_max_attempts",
            "delivery_lease_seconds",
            "delivery_batch_size",
            "delivery_concurrency",
            "fcm_max_per_minute",
            "command_ttl_seconds",
            "webhook_max_attempts",
            "webhook_concurrency",
            "audit_retention_days",  # 0 would delete the whole trail (issue #21)
            "webhook_response_max_bytes",
            "console_idle_minutes",
            "console_session_hours",
        ):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"NEXMDM_{name.upper()} must be at least 1", field=name)
        for name in (
            "heartbeat_retention_days",
            "dispatch_retention_days",
            "download_retention_days",
            "campaign_retention_days",
            "webhook_retention_days",
            "app_change_retention_days",
            "location_retention_days",
            "approval_retention_days",
            "destructive_delay_seconds",
            "console_retention_days",
            "profile_grace_seconds",
            "remediation_per_device_day",
            "cleanup_retries",
            "cleanup_batch_pause_ms",
            "migration_lock_timeout_ms",
            "migration_retries",
            "migration_backoff_ms",
            "campaign_max_targets",
            "selector_statement_timeout_ms",
        ):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"NEXMDM_{name.upper()} must not be negative", field=name)
        for name in ("webhook_timeout_seconds", "request_body_timeout_seconds", "apk_upload_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"NEXMDM_{name.upper()} must be above 0", field=name)
        object.__setattr__(self, "forwarded_allow_ips", check_forwarded_allow_ips(self.forwarded_allow_ips))
        self._check_nodes()
        self._check_public_url()
        if self.device_offline_seconds < self.device_online_seconds:
            raise InvalidArgument(
                "NEXMDM_DEVICE_OFFLINE_SECONDS must not be below NEXMDM_DEVICE_ONLINE_SECONDS",
                field="device_offline_seconds",
            )

    def _check_nodes(self) -> None:
        """The settings of several nodes: read replica, Redis, PgBouncer, APK storage."""
        if self.database_read_url:
            read_url = normalize_database_url(self.database_read_url)
            if not read_url.startswith("postgresql") or self.is_sqlite:
                raise InvalidArgument(
                    "NEXMDM_DATABASE_READ_URL must be a PostgreSQL replica of a PostgreSQL NEXMDM_DATABASE_URL",
                    field="database_read_url",
                )
            object.__setattr__(self, "database_read_url", read_url)
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidArgument("NEXMDM_REDIS_URL must start with redis://, rediss:// or unix://", field="redis_url")
        if self.database_pool_mode not in ("session", "transaction"):
            raise InvalidArgument(
                "NEXMDM_DATABASE_POOL_MODE must be 'session' (a direct connection) or 'transaction' (PgBouncer)",
                field="database_pool_mode",
            )
        storage = self.apk_storage.strip().lower() or ("folder" if self.is_sqlite else "database")
        if storage not in ("database", "folder"):
            raise InvalidArgument("NEXMDM_APK_STORAGE must be 'database' or 'folder'", field="apk_storage")
        object.__setattr__(self, "apk_storage", storage)

    def _check_public_url(self) -> None:
        public = self.public_url.strip().rstrip("/")
        if public and (not public.startswith(("https://", "http://")) or any(c in public for c in "?#\\ ")):
            raise InvalidArgument(
                "NEXMDM_PUBLIC_URL must be an http(s) base URL without query or fragment, such as "
                "https://mdm.example.com",
                field="public_url",
            )
        object.__setattr__(self, "public_url", public)
        if self.oidc_issuer and not public:
            raise InvalidArgument(
                "NEXMDM_OIDC_ISSUER needs NEXMDM_PUBLIC_URL: the console's sign-in callback is built from it, "
                "never from a request's Host header",
                field="public_url",
            )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def retention_days(self) -> dict[str, int]:
        """Configured retention period per cleanup entity."""
        return {
            "device_heartbeats": self.heartbeat_retention_days,
            "fcm_dispatches": self.dispatch_retention_days,
            "apk_download_events": self.download_retention_days,
            "campaigns": self.campaign_retention_days,
            "audit_events": self.audit_retention_days,
            "webhook_outbox": self.webhook_retention_days,
            "device_app_changes": self.app_change_retention_days,
            "device_locations": self.location_retention_days,
            "approvals": self.approval_retention_days,
            "console_sessions": self.console_retention_days,
        }

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: v for k, v in changes.items() if v is not None})
        if "data_dir" in changes and "apk_dir" not in changes and self.apk_dir == self.data_dir / "apks":
            values["apk_dir"] = None
        return Settings(**values)


def env_name(field_name: str) -> str:
    return f"NEXMDM_{field_name.upper()}"


def _parse(name: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise InvalidArgument(f"{env_name(name)}={raw!r} is not a valid number", field=name) from None
    return raw


def get_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment (or ``environ``), then apply non-None ``overrides``."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(env_name(f.name))
        if raw is None or (raw == "" and f.name != "forwarded_allow_ips"):  # an empty list trusts nobody
            continue
        if f.name in ("data_dir", "apk_dir", "fcm_credentials"):
            values[f.name] = Path(raw).expanduser()
        else:
            values[f.name] = _parse(f.name, raw, f.default)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
