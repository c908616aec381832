from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from apps.bots.services import BotDeployError, bot_deploy, package_limits
from apps.drive.package import PackageError, package_read_dir, package_read_zip
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = "Deploy a bot package (a <bot>.gbai folder or a .zip of one) into a tenant's drive and process it."

    def add_arguments(self, parser):
        parser.add_argument("path", help="a <bot>.gbai directory or a .zip file")
        parser.add_argument("--tenant", required=True, help="the tenant's schema name")
        parser.add_argument("--bot", help="bot name, for a zip holding the package's contents at its root")

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(schema_name=options["tenant"], ready=True).first()
        if tenant is None:
            raise CommandError(f"no ready tenant with schema {options['tenant']!r}")
        path = Path(options["path"])
        try:
            if path.is_dir():
                package = package_read_dir(path, limits=package_limits())
            elif path.is_file():
                with path.open("rb") as handle:
                    package = package_read_zip(handle, bot_name=options["bot"], limits=package_limits())
            else:
                raise CommandError(f"{path} does not exist")
        except PackageError as exc:
            raise CommandError(f"package refused: {exc}") from exc
        with schema_context(tenant.schema_name):
            try:
                report = bot_deploy(package=package)
            except BotDeployError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"deployed bot {report.bot.name} to {tenant.schema_name}: {report.files_written} files, "
            f"{report.files_removed} removed"
        )
        for key, error in report.errors.items():
            self.stderr.write(f"  {key}: {error}")
