"""Full-text search: a generated tsvector column with a GIN index on PostgreSQL, an FTS5 table on SQLite.

Neither is declared on the model: the database keeps them current on every insert and update.
"""

from django.db import migrations

from mailbox.search import PG_BACKWARD, PG_FORWARD, SQLITE_BACKWARD, SQLITE_FORWARD


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
