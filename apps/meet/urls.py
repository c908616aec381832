"""URLs of Meetings on tenant hosts (included by gbplatform.urls_tenant)."""

from django.urls import path

from apps.meet import views

urlpatterns = [
    path("api/meet/rooms", views.rooms_api, name="meet-rooms-api"),
    path("api/meet/rooms/<slug:name>", views.room_api, name="meet-room-api"),
    path("api/meet/rooms/<slug:name>/token", views.room_token_api, name="meet-room-token-api"),
    path("api/meet/webhook", views.meet_webhook, name="meet-webhook"),
    path("meet/<slug:name>/", views.room_page, name="meet-room"),
]
