"""Mail admins (the "Mail admin" group of providers' migration 0003) may share templates with everyone."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Mail admin"


def permission_grant(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure this one exists now.
    app_config = apps.get_app_config("mailbox")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    share = Permission.objects.get(content_type__app_label="mailbox", codename="share_template")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.add(share)


def permission_revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for group in Group.objects.filter(name=GROUP):
        group.permissions.remove(*group.permissions.filter(content_type__app_label="mailbox", codename="share_template"))


class Migration(migrations.Migration):
    dependencies = [
        ("mailbox", "0019_batches"),
        ("providers", "0003_mail_admin_group"),
    ]

    operations = [migrations.RunPython(permission_grant, permission_revoke)]
