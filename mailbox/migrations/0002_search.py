"""Full-text search: a generated tsvector column with a GIN index on PostgreSQL, an FTS5 table on SQLite.

Neither is declared on the model: the database keeps them current on every insert and update.
"""

from django.db import migrations

# The statements as they were when this migration was written (0013 changes the indexed text).
PG_FORWARD = [
    """
    ALTER TABLE mailbox_message ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || replace(coalesce(from_address, ''), '@', ' ') || ' '
            || coalesce("to"::text, '') || ' ' || coalesce(cc::text, '') || ' '
            || replace(coalesce("to"::text, '') || ' ' || coalesce(cc::text, ''), '@', ' ') || ' '
            || left(coalesce(body_text, ''), 200000))
    ) STORED
    """,
    "CREATE INDEX mailbox_message_search ON mailbox_message USING gin (search_tsv)",
]
PG_BACKWARD = ["DROP INDEX IF EXISTS mailbox_message_search", "ALTER TABLE mailbox_message DROP COLUMN search_tsv"]

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE mailbox_message_fts USING fts5("
    "subject, participants, body, tokenize = 'unicode61 remove_diacritics 2')",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ai AFTER INSERT ON mailbox_message BEGIN
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''), new.body_text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_au AFTER UPDATE
        OF subject, from_name, from_address, "to", cc, body_text ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
        INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        VALUES (new.id, new.subject, coalesce(new.from_name, '') || ' ' || coalesce(new.from_address, '') || ' '
            || coalesce(new."to", '') || ' ' || coalesce(new.cc, ''), new.body_text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS mailbox_message_fts_ad AFTER DELETE ON mailbox_message BEGIN
        DELETE FROM mailbox_message_fts WHERE rowid = old.id;
    END""",
    """INSERT INTO mailbox_message_fts(rowid, subject, participants, body)
        SELECT id, subject, coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' '
            || coalesce("to", '') || ' ' || coalesce(cc, ''), body_text FROM mailbox_message""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS mailbox_message_fts_ai",
    "DROP TRIGGER IF EXISTS mailbox_message_fts_au",
    "DROP TRIGGER IF EXISTS mailbox_message_fts_ad",
    "DROP TABLE IF EXISTS mailbox_message_fts",
]



def _sqlite_has_fts5(cursor) -> bool:
    try:
        cursor.execute("CREATE VIRTUAL TABLE temp.mailhub_fts5_probe USING fts5(x)")
        cursor.execute("DROP TABLE temp.mailhub_fts5_probe")
        return True
    except Exception:  # noqa: BLE001 - an SQLite built without FTS5: search falls back to LIKE
        return False


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    with schema_editor.connection.cursor() as cursor:
        if vendor == "postgresql":
            statements = PG_FORWARD
        elif vendor == "sqlite" and _sqlite_has_fts5(cursor):
            statements = SQLITE_FORWARD
        else:
            return
        for sql in statements:
            cursor.execute(sql)


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(vendor, [])
    with schema_editor.connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("mailbox", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
