"""Each folder's message and unread counts, kept by database triggers (see mailbox.folder_counts) and filled here."""

from django.db import migrations, models

from mailbox.folder_counts import PG_BACKWARD, PG_FORWARD, SQLITE_BACKWARD, SQLITE_TRIGGERS, folder_counts_recount


def forward(apps, schema_editor):
    connection = schema_editor.connection
    statements = {"postgresql": PG_FORWARD, "sqlite": SQLITE_TRIGGERS}.get(connection.vendor, [])
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    folder_counts_recount(using=connection.alias)


def backward(apps, schema_editor):
    statements = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor, [])
    with schema_editor.connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [
        ("mailbox", "0025_watchers"),
    ]

    operations = [
        migrations.AddField(
            model_name="folder",
            name="message_count",
            field=models.IntegerField(default=0, editable=False),
        ),
        migrations.AddField(
            model_name="folder",
            name="unread_count",
            field=models.IntegerField(default=0, editable=False),
        ),
        migrations.RunPython(forward, backward),
    ]
