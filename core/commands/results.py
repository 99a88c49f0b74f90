"""An ack's typed answer: its ``result`` checked against the action's result schema, or a failure's
``error_code`` from the fixed list; and what a completed ack changes beyond the command (a location, lost mode).

Everything here is checked before the ack's UPDATE: a refused result leaves the command pending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from core.base import validation
from core.base.errors import InvalidArgument
from core.base.settings import Settings
from core.commands.catalogue import ERROR_CODES, InvalidResult, catalogue_for
from core.devices import locations

#: the largest result kept, serialized (a result is a few fields, not a file)
MAX_RESULT_BYTES = 16384


@dataclass(frozen=True)
class Answer:
    """What a valid ack stores (``result``, ``error_code``) and the location it carries, if any."""

    result: dict[str, Any] | None = None
    error_code: str | None = None
    fix: dict[str, Any] | None = None


def _size(result: dict[str, Any]) -> None:
    try:
        size = len(validation.canonical_json(result).encode("utf-8"))
    except (TypeError, ValueError):
        raise InvalidResult("result must be plain JSON", field="result") from None
    if size > MAX_RESULT_BYTES:
        raise InvalidResult(f"result is {size} bytes serialized; at most {MAX_RESULT_BYTES}", field="result")


def check_answer(
    settings: Settings | None, action_name: str, status: str, result: object, error_code: object
) -> Answer:
    """Check an ack's ``result`` and ``error_code`` for a command of ``action_name`` (``status``: acked|failed)."""
    if error_code is not None:
        if error_code not in ERROR_CODES:
            raise InvalidArgument(f"error_code must be one of {', '.join(ERROR_CODES)}", field="error_code")
        if status != "failed":
            raise InvalidArgument("error_code belongs to a failed ack only", field="error_code")
    if status == "failed":
        if result is not None:
            raise InvalidResult("a failed ack carries no result: give error_code (and detail)", field="result")
        return Answer(error_code=str(error_code) if error_code is not None else None)
    if result is not None and not isinstance(result, dict):
        raise InvalidResult("result must be a JSON object", field="result")
    if result is not None:
        _size(result)
    action = catalogue_for(settings).actions.get(action_name)
    if action is None:  # no longer in the catalogue (the configuration changed since it was sent): untyped
        return Answer(result=result)
    action.check_result(result)
    fix = None
    where = {"locate": "result", "lost_mode": "result.location"}.get(action_name)
    found = result if action_name == "locate" else (result or {}).get("location")
    if where is not None and found is not None:
        try:
            fix = locations.check_fix(found)
        except InvalidArgument as exc:  # a fix in the future: named at its place in the result
            raise InvalidResult(exc.message, field=f"{where}.{exc.field}") from None
    return Answer(result=action.stored_result(result), fix=fix)


def apply_answer(db: Session, row: Any, answer: Answer) -> None:
    """What a completed ack of ``row`` (the finished dispatch) changes beside the command, in its transaction."""
    if row["status"] != "acked":
        return
    device_id, request_id, action = row["device_id"], row["request_id"], row["action"]
    if action == "lost_mode":
        payload = row["payload"] or {}
        locations.start_lost_mode(
            db,
            device_id=device_id,
            message=str(payload.get("message", "")),
            phone=payload.get("phone"),
            request_id=request_id,
        )
    elif action == "lost_mode_off":
        locations.end_lost_mode(db, device_id)
    if answer.fix is not None:
        source = "locate" if action == "locate" else "lost_mode"
        locations.record_fix(db, device_id=device_id, fix=answer.fix, source=source, request_id=request_id)
