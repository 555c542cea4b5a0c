"""mailhub.http: the signed-in user of a request, as the admin's overridden methods read it."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from mailhub.http import request_user


def test_request_user_is_the_signed_in_user(alice):
    request = RequestFactory().get("/admin/")
    request.user = alice
    assert request_user(request) == alice


def test_request_user_refuses_an_anonymous_request():
    request = RequestFactory().get("/admin/")
    request.user = AnonymousUser()
    with pytest.raises(PermissionDenied):
        request_user(request)


def test_a_missing_page_is_mailhubs_own_and_a_crash_says_nothing_was_lost(client, alice, settings):
    settings.DEBUG = False
    client.force_login(alice)
    missing = client.get("/thread/999999/")
    assert missing.status_code == 404
    body = missing.content.decode()
    assert "This page does not exist" in body and 'href="/"' in body and "favicon.svg" in body

    from django.test import RequestFactory
    from django.views.defaults import server_error

    crashed = server_error(RequestFactory().get("/"))
    assert crashed.status_code == 500
    assert "Nothing you sent or wrote was lost" in crashed.content.decode()
    assert client.get("/favicon.ico").status_code == 301
