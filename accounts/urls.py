from django.urls import path

from accounts import imap_views, views

app_name = "accounts"
urlpatterns = [
    path("", views.account_list, name="list"),
    path("connect/imap/", imap_views.imap_connect, name="imap_connect"),
    path("connect/<str:provider_id>/", views.connect, name="connect"),
    path("<int:account_id>/password/", imap_views.imap_reconnect, name="imap_reconnect"),
    path("<int:account_id>/disconnect/", views.disconnect, name="disconnect"),
]
