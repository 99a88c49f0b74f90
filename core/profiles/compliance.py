"""Compliance: a device's status report on its effective profile, verified by the server, and the fleet's
compliance by state, reason, profile or model.

Trust, then verify: the device reports per item (``apps/P``, ``settings/K``, ``agent``, ``os``,
``heartbeat_seconds``); the server judges every ``required`` and ``blocked`` app, the agent and the OS from
the inventory the device reported (``device_inventory``, ``device_apps``) and, where the two disagree,
keeps its own judgement and says so on the item (``"disagreement": {"reported": ...}``). Items the
server cannot judge (settings, ``available`` apps, anything before the first inventory) are the device's
word. A report on another hash than the device's effective one is ``Conflict`` (it fetches the profile
again); the same report again changes nothing. ``device.noncompliant`` and ``device.compliant`` are
emitted when the judged state changes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from core.base.errors import Conflict, InvalidArgument, NotFound
from core.base.settings import Settings
from core.base.validation import SHA256_RE, text
from core.base.versions import version_key
from core.devices import compliance_terms, scopes, selectors
from core.events import webhooks
from core.models import Device, DeviceApp, DeviceCompliance, DeviceInventory, DeviceProfile
from core.profiles import effective, grace, remediation
from core.storage.dialect import insert_for
from core.storage.types import utcnow

ITEM_STATES = ("compliant", "noncompliant", "pending")
MAX_ITEMS = 5000
BY = ("state", "profile", "reason", "model")


class ProfileNotCurrent(Conflict):
    """The report is about another hash than the device's effective profile (it fetches the profile again)."""

    code = "profile_not_current"


def check_report(body: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    """``(effective_hash, {key: item})`` of a status report; ``InvalidArgument`` naming the path."""
    if not isinstance(body, dict):
        raise InvalidArgument("a status report is an object", field="$")
    for key in body:
        if key not in ("effective_hash", "items"):
            raise InvalidArgument(f"{key}: unknown key (allowed: effective_hash, items)", field=str(key))
    digest = body.get("effective_hash")
    if not isinstance(digest, str) or not SHA256_RE.fullmatch(digest):
        raise InvalidArgument("effective_hash must be 64 lowercase hex characters", field="effective_hash")
    items = body.get("items", [])
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise InvalidArgument(f"items must be a list of at most {MAX_ITEMS}", field="items")
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        key, checked = _check_item(item, f"items[{i}]")
        if key in out:
            raise InvalidArgument(f"items[{i}].key {key} is reported twice", field=f"items[{i}].key")
        out[key] = checked
    return digest, out


def _check_item(item: Any, path: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict):
        raise InvalidArgument(f"{path} must be an object", field=path)
    for key in item:
        if key not in ("key", "state", "reason", "detail"):
            raise InvalidArgument(f"{path}.{key}: unknown key", field=f"{path}.{key}")
    if not isinstance(item.get("key"), str) or not 0 < len(item["key"]) <= 300:
        raise InvalidArgument(f"{path}.key must be an item key such as apps/com.acme.pos", field=f"{path}.key")
    if item.get("state") not in ITEM_STATES:
        raise InvalidArgument(f"{path}.state must be one of {', '.join(ITEM_STATES)}", field=f"{path}.state")
    reason = item.get("reason")
    if reason is not None and reason not in compliance_terms.REASONS:
        raise InvalidArgument(
            f"{path}.reason must be one of {', '.join(compliance_terms.REASONS)}", field=f"{path}.reason"
        )
    detail = item.get("detail")
    if detail is not None and (not isinstance(detail, str) or len(detail) > 500):
        raise InvalidArgument(f"{path}.detail is text of at most 500 characters", field=f"{path}.detail")
    # a NUL is refused by PostgreSQL's JSON (and an ESC would reach an operator's terminal): refused by name
    text(item["key"], f"{path}.key", max_length=300)
    text(detail, f"{path}.detail", max_length=500)
    return item["key"], {k: item[k] for k in ("state", "reason", "detail") if item.get(k) is not None}


def _judge_app(app: dict[str, Any], held: int | None) -> dict[str, Any] | None:
    if app["install"] == "blocked":
        if held is None:
            return {"state": "compliant"}
        return {"state": "noncompliant", "reason": "APP_INSTALLED", "detail": f"installed at {held}"}
    if app["install"] != "required":
        return None  # available: the device's word
    if held is None:
        return {"state": "noncompliant", "reason": "APP_NOT_INSTALLED"}
    wanted = app.get("min_version_code")
    if wanted is not None and held < wanted:
        return {"state": "noncompliant", "reason": "APP_NOT_UPDATED", "detail": f"{held} < {wanted}"}
    return {"state": "compliant"}


def _judge_agent(agent: dict[str, Any], held: str | None) -> dict[str, Any] | None:
    wanted = agent.get("min_version")
    if wanted is None:
        return {"state": "compliant"}
    if held is None or version_key(held) is None:
        return None
    if (version_key(held) or "") < (version_key(wanted) or ""):
        return {"state": "noncompliant", "reason": "APP_NOT_UPDATED", "detail": f"agent {held} < {wanted}"}
    return {"state": "compliant"}


def _judge_os(os_: dict[str, Any], inventory: DeviceInventory) -> dict[str, Any] | None:
    level, patch = os_.get("min_api_level"), os_.get("min_security_patch")
    if level is not None:
        if inventory.api_level is None:
            return None
        if inventory.api_level < level:
            return {"state": "noncompliant", "reason": "API_LEVEL", "detail": f"API {inventory.api_level} < {level}"}
    if patch is not None:
        if inventory.security_patch is None:
            return None
        if inventory.security_patch < date.fromisoformat(patch):
            detail = f"security patch {inventory.security_patch.isoformat()} < {patch}"
            return {"state": "noncompliant", "reason": "OS_NOT_PERMITTED", "detail": detail}
    return {"state": "compliant"}


def judge(db: Session, device_id: str, document: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The server's judgement of every item it can judge from the reported inventory (``None``: it cannot)."""
    inventory = db.get(DeviceInventory, device_id)
    out: dict[str, dict[str, Any] | None] = {f"apps/{a['package']}": None for a in document.get("apps", [])}
    if inventory is None:
        return out
    packages = [a["package"] for a in document.get("apps", [])]
    held = dict(
        db.execute(
            select(DeviceApp.package, DeviceApp.version_code).where(
                DeviceApp.device_id == device_id, DeviceApp.package.in_(packages)
            )
        ).all()
    )
    for app in document.get("apps", []):
        out[f"apps/{app['package']}"] = _judge_app(app, held.get(app["package"]))
    if "agent" in document:
        out["agent"] = _judge_agent(document["agent"], inventory.agent_version)
    if "os" in document:
        out["os"] = _judge_os(document["os"], inventory)
    return out


def item_keys(document: dict[str, Any]) -> list[str]:
    keys = [f"apps/{a['package']}" for a in document.get("apps", [])]
    keys += [f"settings/{k}" for k in document.get("settings", {})]
    return keys + [k for k in ("agent", "os", "heartbeat_seconds") if k in document]


def report(db: Session, settings: Settings, device: Device, body: Any) -> dict[str, Any]:
    """Store a device's status report as the server judges it; returns ``{"state", "reasons", "items"}``."""
    digest, reported = check_report(body)
    effective.refresh_device(db, settings, device.id)
    db.refresh(device, ["effective_hash"])
    if device.effective_hash is None or digest != device.effective_hash:
        raise ProfileNotCurrent(
            "this is not the device's effective profile: fetch GET /v1/profile again", field="effective_hash"
        )
    document = effective.document_of(db, digest) or {}
    wanted = item_keys(document)
    for key in reported:
        if key not in wanted:
            raise InvalidArgument(f"items: {key} is not an item of this profile", field="items")
    state, reasons, items = _judged(db, device.id, document, reported)
    _store(db, device.id, digest, state, reasons, items)
    remediation.remediate(db, settings, [(device.id, document, items)])
    return {"effective_hash": digest, "state": state, "reasons": reasons, "items": items}


def _judged(
    db: Session, device_id: str, document: dict[str, Any], reported: dict[str, dict[str, Any]]
) -> tuple[str, list[str], list[dict[str, Any]]]:
    """The device's state, reasons and items: the server's judgement where it has one, else the device's."""
    server = judge(db, device_id, document)
    items = []
    for key in item_keys(document):
        mine, theirs = server.get(key), reported.get(key)
        if mine is not None:
            item = {"key": key, **mine, "verified": True}
            if theirs is not None and theirs["state"] != mine["state"]:
                item["disagreement"] = {"reported": theirs["state"], "reason": theirs.get("reason")}
        elif theirs is not None:
            item = {"key": key, **theirs, "verified": False}
        else:
            item = {"key": key, "state": "pending", "reason": "PENDING", "verified": False}
        items.append(item)
    states = {item["state"] for item in items}
    state = "noncompliant" if "noncompliant" in states else "pending" if "pending" in states else "compliant"
    reasons = sorted({item["reason"] for item in items if item["state"] == "noncompliant" and item.get("reason")})
    return state, reasons, items


def _device_word(item: dict[str, Any]) -> dict[str, Any] | None:
    """What the device said of an item in its last report (``None``: it said nothing)."""
    if "disagreement" in item:
        said = item["disagreement"]
        return {"state": said["reported"], **({"reason": said["reason"]} if said.get("reason") else {})}
    if item.get("reason") == "PENDING" and not item.get("verified") and item["state"] == "pending":
        return None
    return {k: item[k] for k in ("state", "reason", "detail") if item.get(k) is not None}


def rejudge_changed(db: Session, *, limit: int = 500) -> int:
    """Judge again the devices whose inventory changed after their last report on their current hash (an
    app updated or removed since): the server's judgement follows the inventory without a new report.
    At most ``limit`` devices a call (the maintenance sweep calls it every round); returns how many."""
    rows = db.execute(
        select(DeviceCompliance.device_id, DeviceCompliance.reported_hash, DeviceCompliance.items)
        .join(Device, Device.id == DeviceCompliance.device_id)
        .join(DeviceInventory, DeviceInventory.device_id == DeviceCompliance.device_id)
        .where(
            Device.effective_hash == DeviceCompliance.reported_hash,
            DeviceInventory.reported_at > DeviceCompliance.reported_at,
        )
        .order_by(DeviceCompliance.device_id)
        .limit(limit)
    ).all()
    for device_id, digest, stored in rows:
        document = effective.document_of(db, digest) or {}
        said = {item["key"]: word for item in stored if (word := _device_word(item)) is not None}
        state, reasons, items = _judged(db, device_id, document, said)
        _store(db, device_id, digest, state, reasons, items)
    return len(rows)


def _store(
    db: Session, device_id: str, digest: str, state: str, reasons: list[str], items: list[dict[str, Any]]
) -> None:
    now = utcnow()
    before = db.execute(
        select(DeviceCompliance.state).where(DeviceCompliance.device_id == device_id).with_for_update()
    ).scalar_one_or_none()
    values = {
        "reported_hash": digest,
        "state": state,
        "reasons": "," + ",".join(reasons) + "," if reasons else ",",
        "items": items,
        "reported_at": now,
    }
    statement = insert_for(db, DeviceCompliance).values(device_id=device_id, changed_at=now, **values)
    changed = {"changed_at": now} if before != state else {}
    db.execute(statement.on_conflict_do_update(index_elements=["device_id"], set_={**values, **changed}))
    stored = grace.store_judged(db, device_id, digest, state, str(values["reasons"]))
    # device.compliant also after a noncompliant the grace ended (``core.profiles.grace``)
    was_noncompliant = "noncompliant" in (before, stored)
    if before == state and not (state == "compliant" and stored == "noncompliant"):
        return
    data = {"device_id": device_id, "effective_hash": digest, "reasons": reasons}
    if state == "noncompliant":
        data["items"] = [i["key"] for i in items if i["state"] == "noncompliant"]
        webhooks.emit(db, "device.noncompliant", data, device_id=device_id)
    elif state == "compliant" and was_noncompliant:
        webhooks.emit(db, "device.compliant", data, device_id=device_id)


def device_compliance(db: Session, settings: Settings, device_id: str) -> dict[str, Any]:
    """A device's compliance now: state, reasons, its effective hash and its last report's items."""
    row = db.execute(
        select(
            Device.effective_hash,
            Device.effective_since,
            Device.compliance_state.label("state"),
            Device.compliance_reasons.label("reasons"),
        ).where(Device.id == device_id)
    ).first()
    if row is None:
        raise NotFound(f"no device {device_id!r}")
    held = db.get(DeviceCompliance, device_id)
    return {
        "device_id": device_id,
        "state": row.state,
        "reasons": [r for r in (row.reasons or "").split(",") if r] if row.state == "noncompliant" else [],
        "effective_hash": row.effective_hash,
        "effective_since": row.effective_since,
        "reported_hash": None if held is None else held.reported_hash,
        "reported_at": None if held is None else held.reported_at,
        "items": [] if held is None else held.items,
    }


def summary(
    db: Session,
    settings: Settings,
    *,
    selector: str | selectors.Selector | None = None,
    by: str = "state",
    scope: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Devices per compliance state (unrevoked, matching ``selector`` within ``scope``), optionally grouped
    ``by`` profile, reason (noncompliant devices per reason) or model.

    By state (the gauge ``nexmdm_fleet_compliance_devices``, ``nexmdm top``) it is one statement: one pass
    over the selected devices, grouped by their stored state (``devices.compliance_state``; no join)."""
    if by not in BY:
        raise InvalidArgument(f"by is one of {', '.join(BY)}", field="by")
    now = now or utcnow()
    parsed = selector if isinstance(selector, selectors.Selector) else selectors.parse(selector)
    where = selectors.where_clause(parsed, settings, now)
    state = compliance_terms.state_expr().label("state")

    def counted(*columns: Any) -> Any:  # the selected devices by their stored state, within the scope
        query = select(*columns, state, func.count().label("n")).select_from(Device)
        if by == "profile" and columns:
            # a device held out of a profile by its rollout (``effective.in_profile``) is not one of its devices
            query = query.join(DeviceProfile, and_(DeviceProfile.device_id == Device.id, effective.in_profile()))
        return scopes.restrict(query.where(where), scope, settings, now).group_by(*columns, state)

    states = dict.fromkeys(compliance_terms.STATES, 0)
    for state_name, n in db.execute(counted()):
        states[state_name] = int(n)
    out: dict[str, Any] = {"selector": parsed.text, "total": sum(states.values()), "states": states, "by": by}
    if by == "state":
        out["groups"] = []
        return out
    groups: dict[str, dict[str, int]] = {}
    if by == "reason":  # every reason's count in one pass over the selected devices
        reasons = compliance_terms.REASONS
        per_reason = select(
            *(func.count().filter(compliance_terms.noncompliant_clause(r)) for r in reasons)
        ).select_from(Device)
        counts = db.execute(scopes.restrict(per_reason.where(where), scope, settings, now)).one()
        groups = {reason: {"noncompliant": int(n)} for reason, n in zip(reasons, counts, strict=True) if n}
    else:
        column = DeviceProfile.name if by == "profile" else func.coalesce(Device.model, "")
        for key, state_name, n in db.execute(counted(column.label("key"))):
            groups.setdefault(key, dict.fromkeys(compliance_terms.STATES, 0))[state_name] = int(n)
    out["groups"] = [{"key": key, "states": counts} for key, counts in sorted(groups.items())]
    return out
