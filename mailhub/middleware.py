"""Project-wide request checks."""

from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


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
