import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django_tenants.utils import get_public_schema_name, schema_context

from apps.tenants.models import Domain
from apps.tenants.services import public_tenant_ensure, template_schema_ensure, tenant_create


class Command(BaseCommand):
    help = (
        "Idempotent first-run setup: the public tenant, the template schema and, with --demo, a demo tenant "
        "and a support-staff user. Credentials are kept in a file so later runs can print them again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true", help="create the demo tenant and staff user")
        parser.add_argument("--demo-domain", default="demo.localhost")
        parser.add_argument("--credentials-file", default=str(Path(settings.VAR_DIR) / "demo-credentials.json"))

    def handle(self, *args, **options):
        public_tenant_ensure()
        template_schema_ensure()
        if not options["demo"]:
            return
        path = Path(options["credentials_file"])
        credentials = json.loads(path.read_text()) if path.exists() else {}
        if not Domain.objects.filter(domain=options["demo_domain"]).exists():
            password = secrets.token_urlsafe(12)
            tenant_create(name="Demo", domain=options["demo_domain"], admin_username="admin", admin_password=password)
            credentials["tenant_admin"] = {"username": "admin", "password": password}
        with schema_context(get_public_schema_name()):
            users = get_user_model().objects
            if not users.filter(username="staff").exists():
                password = secrets.token_urlsafe(12)
                users.create_superuser(username="staff", email="", password=password)
                credentials["staff"] = {"username": "staff", "password": password}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(credentials, indent=2))
        path.chmod(0o600)
        self._deploy_sample(options["demo_domain"])

    def _deploy_sample(self, domain: str) -> None:
        """The sample bot of samples/ goes into the demo tenant once; later edits there are the user's."""
        from apps.bots.models import Bot
        from apps.bots.services import bot_deploy, package_limits
        from apps.drive.package import package_read_dir

        sample = Path(settings.BASE_DIR) / "samples" / "demo.gbai"
        tenant = Domain.objects.select_related("tenant").get(domain=domain).tenant
        with schema_context(tenant.schema_name):
            if not sample.is_dir() or Bot.objects.filter(name="demo").exists():
                return
            report = bot_deploy(package=package_read_dir(sample, limits=package_limits()))
            self.stdout.write(f"deployed the sample bot '{report.bot.name}' to the demo tenant")
            for key, error in report.errors.items():
                self.stderr.write(f"  {key}: {error}")
