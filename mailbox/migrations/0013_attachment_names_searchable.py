"""Attachment file names join the full-text index: a plain word finds budget.xlsx as it finds a subject."""

import importlib

from django.db import migrations, models

from mailbox.search import PG_BACKWARD, PG_FORWARD, SQLITE_REFILL, SQLITE_TRIGGERS

_initial = importlib.import_module("mailbox.migrations.0002_search")
_DROP_TRIGGERS = [sql for sql in _initial.SQLITE_BACKWARD if sql.startswith("DROP TRIGGER")]
_NAMES = {"postgresql": "string_agg(filename, ' ')", "sqlite": "group_concat(filename, ' ')"}


def _fts_table(cursor) -> bool:
    cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'mailbox_message_fts'")
    return cursor.fetchone() is not None


def _search_rebuild(schema_editor, *, pg: list[str], triggers: list[str], refill: list[str]) -> None:
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            # ANALYZE: without statistics on the new column the planner misjudges common words (0.5 s searches).
            for sql in [*PG_BACKWARD, *pg, "ANALYZE mailbox_message"]:
                cursor.execute(sql)
        elif vendor == "sqlite" and _fts_table(cursor):
            for sql in [*_DROP_TRIGGERS, *triggers, *refill]:
                cursor.execute(sql)


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor in _NAMES:
            cursor.execute(
                "UPDATE mailbox_message SET attachment_names = coalesce((SELECT "  # noqa: S608 - constants
                f"{_NAMES[vendor]} FROM mailbox_attachment a WHERE a.message_id = mailbox_message.id "
                "AND filename <> ''), '') WHERE id IN (SELECT message_id FROM mailbox_attachment)"
            )
    _search_rebuild(schema_editor, pg=PG_FORWARD, triggers=SQLITE_TRIGGERS, refill=SQLITE_REFILL)


def backward(apps, schema_editor):
    _search_rebuild(
        schema_editor,
        pg=_initial.PG_FORWARD,
        triggers=_initial.SQLITE_FORWARD[1:4],
        refill=["DELETE FROM mailbox_message_fts", _initial.SQLITE_FORWARD[4]],
    )


class Migration(migrations.Migration):
    dependencies = [("mailbox", "0012_outgoing_error_code")]
    operations = [
        migrations.AddField(
            model_name="message",
            name="attachment_names",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.RunPython(forward, backward),
    ]
