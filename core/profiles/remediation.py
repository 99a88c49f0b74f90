"""Remediation: a noncompliant ``required`` app with a ``build`` gets its ``install_apk`` on its own, so that
"make it so" is one profile, not a campaign per straggler (docs/profiles.md, "Remediation").

After a device is judged (its status report, or the maintenance sweep after its inventory changed), every
item judged noncompliant ``APP_NOT_INSTALLED`` or ``APP_NOT_UPDATED`` whose effective app entry is
``required`` with a ``build`` asks for ``install_apk {"build_id": B}``. It is sent through the command path
(``core.commands.bulk``: the catalogue's check, a pending command pushed by the delivery worker, an audit
row by ``system:remediation``) unless

- remediation is off (``NEXMDM_REMEDIATION=false``);
- the build was removed, or its version code is below the entry's ``min_version_code`` (installing it
  could never make the device compliant: it would be sent again every day);
- the device is revoked or in lost mode (an install is no use to a device nobody holds);
- the device already has a pending ``install_apk`` of that build (sent by anyone, a campaign too);
- the device already got ``NEXMDM_REMEDIATION_PER_DEVICE_DAY`` remediation commands today (UTC);
- it got this build already today: the request id ``remediate:{device}:{build}:{YYYY-MM-DD}`` is unique,
  so a build is sent at most once a day to a device, whichever process judges it.

- the build's manifest declares another package than the app entry's (``apk_builds.package``, read at
  upload; ``profiles apply`` refuses such a pairing, so only a document stored before that check has
  one). A build whose package is unknown (uploaded before migration 0022, or an unreadable manifest) is
  trusted: the profile's author paired it with its package.

A device that neither reports nor changes its inventory after a failed install is retried the next day by
the sweep's daily pass (:func:`retry_due`).

One statement per build among the judged devices (a sweep judges up to 500 at a time), never one per
device; a device with nothing to remediate costs nothing more than its judgement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, literal, or_, select
from sqlalchemy.orm import Session

from core.base.settings import Settings
from core.base.validation import payload_hash
from core.commands.bulk import create_for_devices
from core.events.audit import REMEDIATION
from core.models import ApkBuild, Device, DeviceCompliance, DeviceLostMode, FcmDispatch
from core.profiles.effective import document_of
from core.storage.types import utcnow

ACTION = "install_apk"
#: the judged reasons an install can fix
REASONS = ("APP_NOT_INSTALLED", "APP_NOT_UPDATED")
#: every remediation command's request id starts with it (the per-device cap counts them)
PREFIX = "remediate:"

#: a judged device: its id, its effective document and its judged items
Judged = tuple[str, dict[str, Any], list[dict[str, Any]]]


def request_id(device_id: str, build_id: int, now: datetime) -> str:
    """The one request id a build's remediation of a device has on ``now``'s day (UTC)."""
    return f"{PREFIX}{device_id}:{build_id}:{now.astimezone(UTC).date().isoformat()}"


def wanted(document: dict[str, Any], items: list[dict[str, Any]]) -> dict[int, tuple[int | None, str]]:
    """``{build: (min_version_code, package)}`` of a judged device's items that an install of their build
    would fix."""
    apps = {f"apps/{app['package']}": app for app in document.get("apps", [])}
    out: dict[int, tuple[int | None, str]] = {}
    for item in items:
        app = apps.get(item.get("key", ""))
        if item.get("state") != "noncompliant" or item.get("reason") not in REASONS or app is None:
            continue
        if app.get("install") == "required" and app.get("build") is not None:
            out[int(app["build"])] = (app.get("min_version_code"), app["package"])
    return out


def remediate(
    db: Session, settings: Settings, judged: Iterable[Judged], *, now: datetime | None = None
) -> list[dict[str, str]]:
    """Send the installs the ``judged`` devices' items ask for; returns ``[{"request_id", "device_id"}]``
    of the commands created (none for a device judged again the same day)."""
    if not settings.remediation or settings.remediation_per_device_day < 1:
        return []
    asks = [
        (device_id, build, low, package)
        for device_id, document, items in judged
        for build, (low, package) in wanted(document, items).items()
    ]
    if not asks:
        return []
    usable = {
        row.id: (row.version_code, row.package)
        for row in db.execute(
            select(ApkBuild.id, ApkBuild.version_code, ApkBuild.package).where(
                ApkBuild.id.in_({ask[1] for ask in asks}), ApkBuild.removed_at.is_(None)
            )
        )
    }
    devices: dict[int, set[str]] = defaultdict(set)
    for device_id, build, low, package in asks:
        if build not in usable:
            continue
        code, holds = usable[build]
        if (low is None or code >= low) and holds in (None, package):
            devices[build].add(device_id)
    now = now or utcnow()
    created: list[dict[str, str]] = []
    for build in sorted(devices):  # in build order, so that the daily cap cuts the same way every time
        created += _send(db, settings, build, sorted(devices[build]), now)
    return created


def _send(db: Session, settings: Settings, build: int, device_ids: list[str], now: datetime) -> list[dict[str, str]]:
    """``install_apk`` of ``build`` to those of ``device_ids`` that may have it now, in one statement."""
    payload = {"build_id": build}
    day = now.astimezone(UTC).date()
    since = datetime.combine(day, time.min, tzinfo=UTC)
    mine = (FcmDispatch.device_id == Device.id, FcmDispatch.generation == Device.generation)
    waiting = select(FcmDispatch.id).where(
        *mine,
        FcmDispatch.action == ACTION,
        FcmDispatch.status == "pending",
        FcmDispatch.payload_hash == payload_hash(payload),
    )
    today = (
        select(func.count())
        .select_from(FcmDispatch)
        .where(FcmDispatch.device_id == Device.id, FcmDispatch.request_id.like(PREFIX + "%"))
        .where(FcmDispatch.created_at >= since)
        .scalar_subquery()
    )
    lost = select(DeviceLostMode.device_id).where(
        DeviceLostMode.device_id == Device.id, DeviceLostMode.generation == Device.generation
    )
    rows = select(
        (literal(PREFIX) + Device.id + literal(f":{build}:{day.isoformat()}")).label("request_id"),
        Device.id,
        Device.generation,
    ).where(
        Device.id.in_(device_ids),
        Device.revoked_at.is_(None),
        ~lost.exists(),
        ~waiting.exists(),
        today < settings.remediation_per_device_day,
    )
    return create_for_devices(db, settings, action=ACTION, payload=payload, devices=rows, actor=REMEDIATION, now=now)


def remediate_judged_since(db: Session, settings: Settings, since: datetime) -> list[dict[str, str]]:
    """Remediate the devices judged noncompliant on an app since ``since`` (the sweep's judgements of a
    round): one read of their judgements, one of each distinct effective document, one statement per build."""
    if not settings.remediation:
        return []
    rows = db.execute(
        select(DeviceCompliance.device_id, DeviceCompliance.reported_hash, DeviceCompliance.items).where(
            DeviceCompliance.reported_at >= since,
            DeviceCompliance.state == "noncompliant",
            or_(*(DeviceCompliance.reasons.like(f"%,{reason},%") for reason in REASONS)),
        )
    ).all()
    documents: dict[str, dict[str, Any]] = {}
    for digest in {row.reported_hash for row in rows}:
        documents[digest] = document_of(db, digest) or {}
    return remediate(db, settings, [(row.device_id, documents[row.reported_hash], row.items) for row in rows])


#: devices retried per pass (a bigger backlog is worked through over the following sweep rounds)
RETRY_BATCH = 500
#: a pass that found less than a batch waits this long before the next (its read scans the noncompliant)
RETRY_EVERY = timedelta(minutes=10)
_next_retry: datetime | None = None


def retry_due(db: Session, settings: Settings, *, now: datetime | None = None) -> list[dict[str, str]]:
    """:func:`retry_failed` from the maintenance sweep: at most every :data:`RETRY_EVERY` in this process,
    unless the last pass filled its batch (the leader's process; a new leader starts with a pass)."""
    global _next_retry
    now = now or utcnow()
    if _next_retry is not None and now < _next_retry:
        return []
    sent, full = _retry(db, settings, now)
    _next_retry = None if full else now + RETRY_EVERY
    return sent


def retry_failed(db: Session, settings: Settings, *, now: datetime | None = None) -> list[dict[str, str]]:
    """One pass of the daily retry (:func:`_retry`)."""
    return _retry(db, settings, now or utcnow())[0]


def _retry(db: Session, settings: Settings, now: datetime) -> tuple[list[dict[str, str]], bool]:
    """The daily retry: devices still noncompliant on an app whose remediation failed or expired on an
    earlier day and that got none today, even if they neither reported nor changed their inventory since.
    One read of up to :data:`RETRY_BATCH` such devices (``NOT EXISTS`` probes of the dispatch index), then
    :func:`remediate` as for a judgement; once sent today a device is out of the next rounds' read."""
    if not settings.remediation or settings.remediation_per_device_day < 1:
        return [], False
    since = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    mine = (FcmDispatch.device_id == DeviceCompliance.device_id, FcmDispatch.request_id.like(PREFIX + "%"))
    failed = select(FcmDispatch.id).where(
        *mine, FcmDispatch.status.in_(("failed", "expired")), FcmDispatch.created_at < since
    )
    today = select(FcmDispatch.id).where(*mine, FcmDispatch.created_at >= since)
    rows = db.execute(
        select(DeviceCompliance.device_id, DeviceCompliance.reported_hash, DeviceCompliance.items)
        .join(Device, Device.id == DeviceCompliance.device_id)
        .where(
            DeviceCompliance.state == "noncompliant",
            or_(*(DeviceCompliance.reasons.like(f"%,{reason},%") for reason in REASONS)),
            Device.revoked_at.is_(None),
            Device.effective_hash == DeviceCompliance.reported_hash,  # judged on the profile it has now
            failed.exists(),
            ~today.exists(),
        )
        .order_by(DeviceCompliance.device_id)
        .limit(RETRY_BATCH)
    ).all()
    documents = {digest: document_of(db, digest) or {} for digest in {row.reported_hash for row in rows}}
    judged = [(row.device_id, documents[row.reported_hash], row.items) for row in rows]
    return remediate(db, settings, judged, now=now), len(rows) == RETRY_BATCH
