from django.urls import path

from mailbox import views

app_name = "mailbox"
urlpatterns = [path("", views.inbox, name="inbox")]
