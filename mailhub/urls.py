from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import SignOutView, oauth_callback
from mailhub.views import csp_report

urlpatterns = [
    # Mail settings live under /admin/settings/ and must be matched before the Django admin.
    path("admin/settings/mail/", include("providers.urls")),
    path("admin/settings/mail/oauth2", oauth_callback, name="oauth_callback"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", SignOutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("csp-report/", csp_report, name="csp_report"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("accounts/", include("accounts.urls")),
    path("", include("mailbox.urls")),
]
