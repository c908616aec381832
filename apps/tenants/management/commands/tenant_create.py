from django.core.management.base import BaseCommand, CommandError

from apps.tenants.services import TenantProvisioningError, tenant_create


class Command(BaseCommand):
    help = "Create a tenant: its schema (cloned from the template), host name and first admin user."

    def add_arguments(self, parser):
        parser.add_argument("name", help="display name, e.g. 'Acme Corp'")
        parser.add_argument("domain", help="host name serving the tenant, e.g. acme.bots.example.com")
        parser.add_argument("--schema", help="schema name (default: first label of the domain)")
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument("--admin-email", default="")
        parser.add_argument("--admin-password", help="default: a generated password, printed once")
        parser.add_argument("--oidc-organization", default="",
                            help="the tenant's organisation id at the platform's OIDC provider (OIDC_ISSUER); "
                                 "without it nobody can sign in through that provider")

    def handle(self, *args, **options):
        try:
            tenant, password = tenant_create(
                name=options["name"],
                domain=options["domain"],
                schema_name=options["schema"],
                admin_username=options["admin_username"],
                admin_password=options["admin_password"],
                admin_email=options["admin_email"],
                oidc_organization_id=options["oidc_organization"],
            )
        except TenantProvisioningError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"created tenant {tenant.name} (schema {tenant.schema_name}) at {options['domain']}")
        if password and not options["admin_password"]:
            self.stdout.write(f"admin login: {options['admin_username']} / {password}")
