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
