"""Project-wide request checks."""

from collections.abc import Callable
from urllib.parse import unquote_to_bytes, urlsplit

from csp.middleware import CSPMiddleware
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase


class NulBytesRefusedMiddleware:
    """A NUL byte in the path or the query string is a 400, never a 500.

    PostgreSQL refuses NUL in text, so a ``%00`` that reached a query (``/suggest/?q=a%00``, a ``cid:`` path)
    raised a database error. Form fields already refuse NUL (Django's ProhibitNullCharactersValidator); this
    covers the values views read straight from the URL.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw_path = request.path_info.encode("utf-8", "surrogateescape")
        query = request.META.get("QUERY_STRING", "")
        if b"\x00" in raw_path or b"\x00" in unquote_to_bytes(query):
            return HttpResponseBadRequest("A NUL character is not allowed in a URL.", content_type="text/plain")
        return self.get_response(request)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the OAuth providers' sign-in origins added to ``form-action``.

    "Connect mailbox" is a form POST that our server answers with a redirect to Google's or Microsoft's
    sign-in page, and browsers apply ``form-action`` to that redirect too. The origins are read per request,
    from GOOGLE_AUTH_URI and MICROSOFT_SIGN_IN_ORIGIN, so a sandbox configured at run time works as well.
    """

    def get_policy_parts(self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False):
        parts = super().get_policy_parts(request=request, response=response, report_only=report_only)
        if not report_only:
            origins = sorted({_origin(settings.GOOGLE_AUTH_URI), _origin(settings.MICROSOFT_SIGN_IN_ORIGIN)})
            parts.update = {**(parts.update or {}), "form-action": origins}
        return parts
