from django.apps import AppConfig


def _revoke_keys_of_deleted_user(sender, instance, **kwargs) -> None:
    from apps.accounts.services import api_keys_revoke_for_deleted_user

    api_keys_revoke_for_deleted_user(instance)


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import pre_delete

        # A deleted user's API keys are revoked (and say why) before the foreign key to the user is nulled.
        pre_delete.connect(_revoke_keys_of_deleted_user, sender=get_user_model(),
                           dispatch_uid="apps.accounts.api_keys_of_deleted_user")
