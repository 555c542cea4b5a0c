"""Project-level views: the sign-in lockout page and the Content-Security-Policy report endpoint."""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import urlsplit

from axes.helpers import get_client_ip_address, get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

csp_logger = logging.getLogger("mailhub.csp")
CSP_REPORT_MAX_BYTES = 16 * 1024


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


@csrf_exempt  # browsers post reports without a CSRF token; the view only logs
@require_POST
def csp_report(request: HttpRequest) -> HttpResponse:
    """A browser's report of something the Content-Security-Policy blocked: one WARNING line, paths only."""
    if len(request.body) > CSP_REPORT_MAX_BYTES:
        return HttpResponse(status=413)
    try:
        report = json.loads(request.body or b"{}").get("csp-report") or {}
    except (ValueError, AttributeError):
        return HttpResponse(status=400)
    csp_logger.warning(
        "CSP violation on %s: %s blocked %s",
        urlsplit(str(report.get("document-uri", ""))).path[:300],
        str(report.get("effective-directive") or report.get("violated-directive", ""))[:100],
        urlsplit(str(report.get("blocked-uri", ""))).path[:300] or str(report.get("blocked-uri", ""))[:50],
    )
    return HttpResponse(status=204)
