from django.urls import path

from accounts import views

app_name = "accounts"
urlpatterns = [
    path("", views.account_list, name="list"),
    path("connect/<str:provider_id>/", views.connect, name="connect"),
    path("<int:account_id>/disconnect/", views.disconnect, name="disconnect"),
]
