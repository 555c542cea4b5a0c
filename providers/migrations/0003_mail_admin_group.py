"""The "Mail admin" group: may change provider settings (Client ID/Secret, enabled) and see their history.

Staff status alone no longer opens Settings → Mail settings; add people to this group (or give them
``providers.change_providerapp``) instead.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Mail admin"
PERMISSIONS = [
    ("providers", "change_providerapp"),
    ("providers", "view_providerapp"),
    ("providers", "view_providersettingschange"),
]


def group_create(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure these exist now.
    app_config = apps.get_app_config("providers")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, codename in PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def group_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("providers", "0002_settings_changes"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(group_create, group_delete)]
