import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.services import API_KEY_SCOPES, api_key_create
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = ("Create an API key for a tenant and print it (the only time the full key is shown). The key acts for "
            "--user: it works only while that user exists, is active and holds the role its scopes need.")

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="the tenant's schema name")
        parser.add_argument("--user", required=True,
                            help="username of the tenant's user the key acts for (e.g. its admin)")
        parser.add_argument("--name", required=True, help="what the key is for, e.g. 'deploy script'")
        parser.add_argument("--scope", action="append", dest="scopes", required=True, choices=API_KEY_SCOPES,
                            help="repeat for several scopes")
        parser.add_argument("--expires-in-days", type=int, default=None)

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["tenant"], ready=True).first()
        if tenant is None:
            raise CommandError(f"no ready tenant with schema {options['tenant']!r}")
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1")
        expires_at = timezone.now() + dt.timedelta(days=days) if days else None
        with schema_context(tenant.schema_name):
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r} in tenant {tenant.schema_name}")
            try:
                created = api_key_create(name=options["name"], scopes=options["scopes"], expires_at=expires_at,
                                         created_by=user)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        self.stderr.write(f"created API key {created.key.prefix} for {tenant.schema_name} acting for {user.username} "
                          f"(scopes: {', '.join(created.key.scopes)}); store it now, it is not shown again")
        self.stdout.write(created.secret)
