"""URLs of the analytics on tenant hosts (included by gbplatform.urls_tenant): the console's conversations
and analytics pages (the console's nav links to /console/conversations/ and /console/analytics/)."""

from django.urls import path

from apps.analytics import views

urlpatterns = [
    path("console/conversations/", views.conversation_list_page, name="console-conversations"),
    path("console/conversations/export.csv", views.conversation_list_export, name="console-conversations-export"),
    path("console/conversations/<uuid:session_id>/", views.transcript_page, name="console-conversation"),
    path("console/conversations/<uuid:session_id>/export.json", views.transcript_export, {"fmt": "json"},
         name="console-conversation-export-json"),
    path("console/conversations/<uuid:session_id>/export.csv", views.transcript_export, {"fmt": "csv"},
         name="console-conversation-export-csv"),
    path("console/analytics/", views.analytics_page, name="console-analytics"),
    path("console/analytics/data.json", views.analytics_data, name="console-analytics-data"),
]
