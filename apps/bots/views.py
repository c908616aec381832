from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import api_access
from apps.accounts.roles import Role
from apps.bots.selectors import bot_list
from apps.bots.services import BotDeployError, bot_deploy, package_limits
from apps.compliance.services import audit_record
from apps.drive.package import PackageError, package_read_zip


@require_GET
def bots_api(request):
    """The tenant's bot directory (what its web chat landing page lists): public on purpose, like the
    chat pages themselves; names only."""
    return JsonResponse({"tenant": request.tenant.name, "bots": bot_list()})


@require_POST
@api_access(role=Role.EDITOR, scope="bots:deploy")
def bot_deploy_api(request):
    """Upload a package (.zip, field `package`): validated whole, then written and processed. Console
    editors (session) or API keys with the `bots:deploy` scope."""
    upload = request.FILES.get("package")
    if upload is None:
        return JsonResponse({"error": "send the package as a .zip file in the form field 'package'"}, status=400)
    if upload.size > settings.PACKAGE_MAX_TOTAL_BYTES:
        return JsonResponse(
            {"error": f"the upload is {upload.size} bytes; the limit is {settings.PACKAGE_MAX_TOTAL_BYTES}"},
            status=413,
        )
    try:
        package = package_read_zip(upload, bot_name=request.POST.get("bot") or None, limits=package_limits())
    except PackageError as exc:
        return JsonResponse({"error": f"package refused: {exc}"}, status=400)
    try:
        report = bot_deploy(package=package)
    except BotDeployError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    audit_record(
        action="bot.deploy",
        object_type="bot",
        object_id=report.bot.name,
        summary={
            "files_written": report.files_written,
            "files_removed": report.files_removed,
            "errors": len(report.errors),
        },
        request=request,
    )
    return JsonResponse(
        {
            "bot": report.bot.name,
            "files_written": report.files_written,
            "files_removed": report.files_removed,
            "errors": report.errors,
        },
        status=200,
    )
