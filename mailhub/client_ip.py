"""The client's address, for sign-in throttling (django-axes' AXES_CLIENT_IP_CALLABLE)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or behind MAILHUB_PROXY_COUNT reverse proxies the address the outermost one saw.

    Each proxy appends the address it received the request from to X-Forwarded-For, so with N proxies the
    client is the N-th entry from the right; anything further left was written by the client and is ignored.
    """
    hops = settings.MAILHUB_PROXY_COUNT
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR")
