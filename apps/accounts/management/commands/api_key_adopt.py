from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_adopt
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = ("Give an ownerless API key (made by api_key_create before keys belonged to a user) an owner, so it "
            "works again: it then acts for --user, who must be active and hold the role its scopes need.")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="the tenant's schema name")
        parser.add_argument("--prefix", required=True, help="the key's prefix (the part after gbk_, as listed)")
        parser.add_argument("--user", required=True,
                            help="username of the tenant's user the key will act for (e.g. its admin)")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["tenant"], ready=True).first()
        if tenant is None:
            raise CommandError(f"no ready tenant with schema {options['tenant']!r}")
        prefix = options["prefix"].strip()
        with schema_context(tenant.schema_name):
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r} in tenant {tenant.schema_name}")
            try:
                key = api_key_adopt(prefix=prefix, user=user)
            except ApiKey.DoesNotExist:
                raise CommandError(f"no API key {prefix!r} in tenant {tenant.schema_name}") from None
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(f"API key {key.prefix} of {tenant.schema_name} now acts for {user.username} "
                          f"(scopes: {', '.join(key.scopes)})")
