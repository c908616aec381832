"""URLs of the console on tenant hosts (included by gbplatform.urls_tenant). Paths are plain so other apps'
templates can link to them; /console/conversations/ and /console/analytics/ belong to apps.analytics."""

from django.urls import include, path

from apps.console.views import administration, bots, drive, home, kb, operations, privacy

urlpatterns = [
    path("console/", home.console_home, name="console-home"),
    # Django's set_language view (POST with CSRF): stores the choice in the django_language cookie.
    path("console/i18n/", include("django.conf.urls.i18n")),
    path("console/bots/", bots.bot_list_page, name="console-bots"),
    path("console/bots/deploy/", bots.bot_deploy_page, name="console-bot-deploy"),
    path("console/bots/<str:name>/", bots.bot_detail_page, name="console-bot"),
    path("console/bots/<str:name>/config/", bots.bot_config_page, name="console-bot-config"),
    path("console/bots/<str:name>/config/save/", bots.bot_config_save, name="console-bot-config-save"),
    path("console/bots/<str:name>/config/validate/", bots.bot_config_validate, name="console-bot-config-validate"),
    path("console/bots/<str:name>/memory/", bots.bot_memory_page, name="console-bot-memory"),
    path("console/bots/<str:name>/memory/set/", bots.bot_memory_set, name="console-bot-memory-set"),
    path("console/kb/", kb.kb_bot_list_page, name="console-kb"),
    path("console/kb/<str:name>/", kb.kb_bot_page, name="console-kb-bot"),
    path("console/kb/<str:name>/progress/", kb.kb_progress_fragment, name="console-kb-progress"),
    path("console/kb/<str:name>/search/", kb.kb_search_page, name="console-kb-search"),
    path("console/kb/<str:name>/documents/<int:pk>/retry/", kb.kb_document_retry, name="console-kb-retry"),
    path("console/schedules/", operations.schedule_bot_list_page, name="console-schedules"),
    path("console/schedules/<str:name>/", operations.schedule_bot_page, name="console-schedules-bot"),
    path("console/meetings/", operations.meeting_list_page, name="console-meetings"),
    path("console/meetings/create/", operations.meeting_create, name="console-meeting-create"),
    path("console/meetings/<str:name>/close/", operations.meeting_close, name="console-meeting-close"),
    path("console/email/", operations.email_bot_list_page, name="console-email"),
    path("console/email/<str:name>/", operations.email_bot_page, name="console-email-bot"),
    path("console/compliance/", administration.audit_log_page, name="console-compliance"),
    path("console/compliance/export.csv", administration.audit_log_export, name="console-compliance-export"),
    path("console/compliance/requests/", privacy.dsr_list_page, name="console-dsr"),
    path("console/compliance/requests/create/", privacy.dsr_create, name="console-dsr-create"),
    path("console/compliance/requests/<uuid:pk>/export.zip", privacy.dsr_export_download, name="console-dsr-export"),
    path("console/compliance/retention/", privacy.retention_page, name="console-retention"),
    path("console/compliance/retention/set/", privacy.retention_set, name="console-retention-set"),
    path("console/api-keys/", administration.api_key_list_page, name="console-api-keys"),
    path("console/api-keys/create/", administration.api_key_create_page, name="console-api-key-create"),
    path("console/api-keys/<str:prefix>/revoke/", administration.api_key_revoke_page, name="console-api-key-revoke"),
    path("console/users/", administration.user_list_page, name="console-users"),
    path("console/users/<int:pk>/role/", administration.user_role_set, name="console-user-role"),
    path("console/drive/", drive.drive_browser_page, name="console-drive"),
    path("console/drive/download/", drive.drive_download, name="console-drive-download"),
]
