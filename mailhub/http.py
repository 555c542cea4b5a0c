"""Request types for the type checker: what the middleware and ``@login_required`` guarantee a view."""

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """Every request: ``HtmxMiddleware`` (installed for the whole site) sets ``request.htmx``."""

    htmx: HtmxDetails


class AuthenticatedHttpRequest(HtmxHttpRequest):
    """A request that passed ``@login_required``: its user is signed in, never ``AnonymousUser``."""

    user: User


def request_user(request: HttpRequest) -> User:
    """The signed-in user where the signature cannot say so (the admin site's overridden methods)."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user
