"""The webhook outbox's figures for metrics (``core.events.webhooks.outbox_stats``), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, insert

from core.events import webhooks
from core.models import WebhookOutbox
from core.storage.types import utcnow


def test_outbox_stats_counts_waiting_and_recently_dead_deliveries_in_one_statement(session_factory) -> None:
    """Pending rows and rows dead within the hour, not delivered ones nor older dead ones; both counts come
    from one statement, so from one snapshot (two let a delivery that went dead between them count twice:
    the metrics test saw pending 1 beside dead 1 for a single delivery)."""
    now = utcnow()
    with session_factory.begin() as db:
        _, endpoint = webhooks.add_endpoint(db, url="https://hooks.example.com/x", events=["device.offline"])
        rows = [
            ("pending", None),
            ("pending", None),
            ("dead", now - timedelta(minutes=5)),
            ("dead", now - timedelta(hours=2)),
            ("delivered", now - timedelta(minutes=1)),
        ]
        db.execute(
            insert(WebhookOutbox),
            [
                {
                    "event_id": f"evt_{i:028d}",
                    "endpoint_id": endpoint["id"],
                    "event_type": "device.offline",
                    "body": "{}",
                    "status": status,
                    "finished_at": finished,
                }
                for i, (status, finished) in enumerate(rows)
            ],
        )
    statements: list[str] = []
    with session_factory() as db:
        engine = db.get_bind()

        def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            stats = webhooks.outbox_stats(db, now=now)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    assert stats == {"pending": 2, "dead_last_hour": 1}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, statements
