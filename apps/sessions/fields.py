"""Message content encrypted at rest when the tenant enables it (`Tenant.encrypt_messages`).

Unlike apps.core.fields (always encrypted), a tenant chooses: text search over transcripts and analytics of
questions work on plaintext only. Encrypted values carry a marker, so a column can hold both (rows written
before the switch stay readable, and turning it off does not lose what was sealed). Sealed with
apps.core.crypto (AES-256-GCM, the tenant schema bound as associated data).
"""

from __future__ import annotations

import logging

from django.db import models

from apps.core import crypto

logger = logging.getLogger(__name__)

# Marks a sealed value; starts with a control character no chat text begins with.
SEALED_MARK = "\x1egbenc1:"
def tenant_encrypts_messages(schema: str) -> bool:
    """The tenant's switch, through the one cached read of a tenant's own settings."""
    from apps.tenants.selectors import tenant_settings

    return bool(tenant_settings(schema).get("encrypt_messages"))


def tenant_flag_forget(schema: str | None = None) -> None:
    from apps.tenants.selectors import tenant_settings_forget

    tenant_settings_forget(schema)


class TenantSealedTextField(models.TextField):
    description = "Text, encrypted at rest when the tenant enables it"

    # Key rotation (apps.core.fields.schema_reencrypt, `manage.py encryption_rotate`) re-seals the values that
    # carry this mark under the active key, and `--status` / `--retire` count them.
    encryption_prefix = SEALED_MARK

    def encryption_context(self, connection) -> str:
        return getattr(connection, "schema_name", "") or ""

    def get_db_prep_value(self, value, connection, prepared=False):
        value = super().get_db_prep_value(value, connection, prepared)
        schema = getattr(connection, "schema_name", "") or ""
        if isinstance(value, str) and schema and schema != "public" and tenant_encrypts_messages(schema):
            return SEALED_MARK + crypto.encrypt_text(value, context=schema)
        return value

    def from_db_value(self, value, expression, connection):
        if not isinstance(value, str) or not value.startswith(SEALED_MARK):
            return value
        schema = getattr(connection, "schema_name", "") or ""
        try:
            return crypto.decrypt_text(value[len(SEALED_MARK):], context=schema)
        except (crypto.DecryptionError, ValueError) as exc:
            logger.error("chat: a sealed message cannot be decrypted in %s: %s", schema, type(exc).__name__)
            return ""
