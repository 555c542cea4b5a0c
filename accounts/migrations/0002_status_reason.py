"""An account's reason for needing its user becomes a code (providers.errors.ErrorCode) instead of English text.

The words users read are now chosen from the code, in their language. Existing rows get the code their
status implies: "no mailbox" for NO_MAILBOX, "access refused" where the old text said Gmail refused access,
otherwise "access revoked".
"""

import providers.registry
from django.db import migrations, models


def reasons_from_details(apps, schema_editor):
    MailAccount = apps.get_model("accounts", "MailAccount")
    for account in MailAccount.objects.exclude(status="active").exclude(status="error"):
        if account.status == "no_mailbox":
            reason = "no_mailbox"
        elif "refused access" in account.status_detail:
            reason = "access_denied"
        else:
            reason = "access_revoked"
        MailAccount.objects.filter(pk=account.pk).update(status_reason=reason)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="mailaccount",
            name="status_reason",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.RunPython(reasons_from_details, migrations.RunPython.noop),
        migrations.RemoveField(model_name="mailaccount", name="status_detail"),
        migrations.AlterField(
            model_name="mailaccount",
            name="provider",
            field=models.CharField(choices=providers.registry.choices, max_length=32),
        ),
    ]
