"""Project-level views: the sign-in lockout page."""

from __future__ import annotations

import math

from axes.helpers import get_client_ip_address, get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def lockout_minutes_left(*, username: str, ip_address: str | None) -> int:
    """Whole minutes until the newest failure that counts against this user name or address has cooled off."""
    cool_off = get_cool_off()
    newest = AccessAttempt.objects.filter(Q(username=username) | Q(ip_address=ip_address)).aggregate(
        newest=Max("attempt_time")
    )["newest"]
    if cool_off is None or newest is None:
        return math.ceil(cool_off.total_seconds() / 60) if cool_off else 0
    left = (newest + cool_off - timezone.now()).total_seconds()
    return max(1, math.ceil(left / 60))


def sign_in_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """django-axes' lockout response (AXES_LOCKOUT_CALLABLE): 429 with "try again in N minutes"."""
    minutes = lockout_minutes_left(
        username=get_client_username(request, credentials) or "", ip_address=get_client_ip_address(request)
    )
    return render(request, "registration/locked_out.html", {"minutes": minutes}, status=429)
