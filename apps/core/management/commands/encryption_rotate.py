"""`manage.py encryption_rotate`: add a new active encryption key and re-encrypt every tenant under it.

    encryption_rotate                  add a key (key file), make it active, queue re-encryption
    encryption_rotate --key-id 2026-q4 the same with a chosen key id
    encryption_rotate --reencrypt      only queue re-encryption (after changing the keys in Vault)
    encryption_rotate --inline         re-encrypt in this process instead of queueing Celery tasks
    encryption_rotate --status         values per key id, per schema and column
    encryption_rotate --retire k1      remove a key from the key file once no value (and no sealed data-export
                                       archive on a tenant's drive) uses it
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import get_public_schema_name, schema_context

from apps.core import crypto
from apps.core.fields import iter_tenant_schemas, schema_key_counts, schema_reencrypt

# Archives named in a refusal: a tenant may hold hundreds, and a longer list buries the message; the count
# says how many there are.
ARCHIVES_NAMED_MAX = 20


def _schemas() -> list[str]:
    return [*iter_tenant_schemas(), get_public_schema_name()]


def archive_usage() -> dict[str, dict[str, list[str]]]:
    """{schema: {key id: [drive keys]}} of the sealed data-export archives on every tenant's drive
    (apps.compliance.gdpr): files, not columns, so the re-encryption walk leaves them under their key."""
    from apps.compliance.gdpr import export_archives_by_key
    from apps.drive.storage import NoTenantDrive

    usage = {}
    for schema in iter_tenant_schemas():
        with schema_context(schema):
            try:
                archives = export_archives_by_key()
            except NoTenantDrive:
                continue
        if archives:
            usage[schema] = archives
    return usage


def key_usage() -> dict[str, dict[str, dict[str, int]]]:
    """{schema: {column: {key id: values}}} across every tenant and the public schema."""
    usage = {}
    for schema in _schemas():
        with schema_context(schema):
            counts = schema_key_counts()
        if counts:
            usage[schema] = counts
    return usage


class Command(BaseCommand):
    help = "Rotate the encryption key: add a new active key, then re-encrypt every value under it."

    def add_arguments(self, parser):
        parser.add_argument("--key-id", help="id of the new key (default: k<n+1>)")
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--reencrypt", action="store_true", help="do not add a key; only re-encrypt")
        action.add_argument("--status", action="store_true", help="show how many values use each key id")
        action.add_argument("--retire", metavar="KEY_ID", help="remove a key that no value uses any more")
        parser.add_argument("--inline", action="store_true", help="re-encrypt here instead of in Celery workers")

    def handle(self, *args, **options):
        try:
            if options["status"]:
                return self._status()
            if options["retire"]:
                return self._retire(options["retire"])
            if not options["reencrypt"]:
                key_id = crypto.keyring_add_key(key_id=options["key_id"])
                self.stdout.write(f"added key {key_id}; it is now the active key")
            active = crypto.keyring_current(fresh=True).active_key_id
        except (ImproperlyConfigured, crypto.EncryptionError) as exc:
            raise CommandError(str(exc)) from None
        if options["inline"]:
            for schema in _schemas():
                with schema_context(schema):
                    report = schema_reencrypt()
                self.stdout.write(f"{schema}: {report.rewritten} re-encrypted, {report.failed} failed")
            return None
        from apps.core.tasks import reencrypt_dispatch

        reencrypt_dispatch.apply_async()
        self.stdout.write(f"re-encryption under {active} queued for every tenant; follow it with --status")
        return None

    def _status(self) -> None:
        active = crypto.keyring_current(fresh=True).active_key_id
        self.stdout.write(f"active key: {active}")
        for schema, columns in key_usage().items():
            for column, per_key in columns.items():
                summary = ", ".join(f"{key_id}: {count}" for key_id, count in sorted(per_key.items()))
                self.stdout.write(f"{schema} {column} {summary}")
        for schema, archives in archive_usage().items():
            summary = ", ".join(f"{key_id or 'unreadable'}: {len(keys)}" for key_id, keys in sorted(archives.items()))
            self.stdout.write(f"{schema} data-export archives {summary}")

    def _retire(self, key_id: str) -> None:
        still = {
            f"{schema} {column}": per_key[key_id]
            for schema, columns in key_usage().items()
            for column, per_key in columns.items()
            if per_key.get(key_id)
        }
        if still:
            where = "; ".join(f"{place}: {count}" for place, count in sorted(still.items()))
            raise CommandError(f"key {key_id} still encrypts {sum(still.values())} values ({where}); "
                               "re-encrypt first (encryption_rotate --reencrypt)")
        archives = sorted(f"{schema}:{key}" for schema, per_key in archive_usage().items()
                          for key in per_key.get(key_id, []))
        if archives:
            # Sealed export archives are files (kept EXPORT_ARCHIVE_KEEP_DAYS, then removed): the re-encryption
            # walk does not rewrite them, and without the key the privacy officer can no longer open them.
            shown = ", ".join(archives[:ARCHIVES_NAMED_MAX]) + (", ..." if len(archives) > ARCHIVES_NAMED_MAX else "")
            raise CommandError(f"key {key_id} still seals {len(archives)} data-export archive(s) ({shown}); "
                               "retire it once they have expired or been downloaded and deleted")
        crypto.keyring_remove_key(key_id)
        self.stdout.write(f"removed key {key_id}")
