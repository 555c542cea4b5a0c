from django.db import migrations, models

# Rows from before the code: their English text stays as the detail, under the code closest to their state.
CODE_BY_STATUS = {"failed": "action_required", "unknown": "send_uncertain", "queued": "provider_failed"}


def codes_for_old_rows(apps, schema_editor):
    outgoing = apps.get_model("mailbox", "OutgoingMessage")
    for status, code in CODE_BY_STATUS.items():
        outgoing.objects.filter(status=status, last_error_code="").exclude(last_error="").update(last_error_code=code)


class Migration(migrations.Migration):
    dependencies = [
        ("mailbox", "0011_store_check_constraints"),
    ]

    operations = [
        migrations.AddField(
            model_name="outgoingmessage",
            name="last_error_code",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.RunPython(codes_for_old_rows, migrations.RunPython.noop),
    ]
