"""The staff groups "suporte" and "financeiro" with their permissions (kulipa/backoffice/roles.py describes them;
this migration keeps its own copy of the table as it was when written). Idempotent: adds, never removes."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

VIEWED = (
    ("orders", "order"),
    ("orders", "orderline"),
    ("inventory", "stockreservation"),
    ("payments", "paymentattempt"),
    ("payments", "paymentevent"),
    ("payments", "reversal"),
    ("payments", "attentionitem"),
    ("payments", "callbackdelivery"),
    ("backoffice", "staffaction"),
)
SUPPORT = (*((app, f"view_{model}") for app, model in VIEWED), ("backoffice", "recheck_payment"))
ROLES = {
    "suporte": SUPPORT,
    "financeiro": (
        *SUPPORT,
        ("backoffice", "reverse_payment"),
        ("backoffice", "resolve_attention"),
        ("backoffice", "force_confirm_payment"),
        ("backoffice", "export_payments"),
    ),
}


def roles_create(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    using = schema_editor.connection.alias
    # Permissions are created by post_migrate, i.e. after every migration ran: create them now (the usual way of
    # doing it inside a migration: the historical app configs have no models module, so set one for the call).
    for label in sorted({app for perms in ROLES.values() for app, _ in perms}):
        app_config = apps.get_app_config(label)
        app_config.models_module = True  # type: ignore[assignment]  # any truthy value, as Django does
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.add(
            *(
                Permission.objects.using(using).get(content_type__app_label=app, codename=codename)
                for app, codename in perms
            )
        )


def roles_delete(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backoffice", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("orders", "0002_payment_statuses"),
        ("inventory", "0003_returned_reservations"),
        ("payments", "0003_reversal_external"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]
