from django.urls import path

from providers import views

app_name = "providers"
urlpatterns = [path("", views.mail_settings, name="mail_settings")]
