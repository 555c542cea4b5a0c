"""Sign-in throttling (django-axes): per user name and per address, with a clear "try again in N minutes"."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings

LIMIT = settings.AXES_FAILURE_LIMIT


def sign_in(client, username: str, password: str, address: str = "203.0.113.7"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == settings.LOGIN_REDIRECT_URL


@pytest.mark.django_db
def test_the_right_password_is_refused_after_a_burst_of_wrong_ones(client, alice):
    assert LIMIT <= 10  # "a handful"
    for _ in range(60):
        sign_in(client, "alice", "wrong-password")
    response = sign_in(client, "alice", "alice-password-1")
    assert response.status_code == 429 and not signed_in(response)
    page = response.content.decode()
    assert "Try again in 15 minutes." in page
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_lockout_starts_at_the_limit_and_not_before(client, alice):
    for _ in range(LIMIT - 1):
        assert sign_in(client, "alice", "wrong-password").status_code == 200  # the form again, with its error
    assert signed_in(sign_in(client, "alice", "alice-password-1"))  # a success resets the count
    client.logout()
    for _ in range(LIMIT):
        sign_in(client, "alice", "wrong-password")
    assert sign_in(client, "alice", "alice-password-1").status_code == 429


@pytest.mark.django_db
def test_a_user_name_is_locked_whatever_the_address(client, alice):
    for n in range(LIMIT):
        sign_in(client, "alice", "wrong-password", address=f"198.51.100.{n + 1}")
    response = sign_in(client, "alice", "alice-password-1", address="192.0.2.200")
    assert response.status_code == 429


@pytest.mark.django_db
def test_an_address_guessing_many_user_names_is_locked_for_everyone(client, alice, bob):
    for n in range(LIMIT):
        sign_in(client, f"user{n}", "guess", address="198.51.100.9")
    assert sign_in(client, "bob", "bob-password-1", address="198.51.100.9").status_code == 429
    assert signed_in(sign_in(client, "bob", "bob-password-1", address="198.51.100.10"))


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cool_off(client, alice):
    for _ in range(LIMIT):
        sign_in(client, "alice", "wrong-password")
    response = sign_in(client, "alice", "alice-password-1")
    assert response.status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.first().attempt_time - timedelta(minutes=10))
    assert "Try again in 5 minutes." in sign_in(client, "alice", "alice-password-1").content.decode()
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.first().attempt_time - timedelta(minutes=6))
    assert signed_in(sign_in(client, "alice", "alice-password-1"))


@pytest.mark.django_db
def test_behind_a_proxy_the_forwarded_client_address_is_counted(client, alice, bob, settings):
    # One proxy in front (MAILHUB_PROXY_COUNT=1): the proxy's own address must not lock out everyone, and an
    # X-Forwarded-For entry the client wrote itself must not let it pick a fresh address per guess.
    settings.MAILHUB_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "172.18.0.5"}
    for n in range(LIMIT):
        client.post("/login/", {"username": f"user{n}", "password": "x"}, **proxy,
                    HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 198.51.100.77")  # fmt: skip
    assert AccessAttempt.objects.filter(ip_address="198.51.100.77").count() == LIMIT
    locked = client.post("/login/", {"username": "bob", "password": "bob-password-1"}, **proxy,
                         HTTP_X_FORWARDED_FOR="198.51.100.77")  # fmt: skip
    assert locked.status_code == 429
    other = client.post("/login/", {"username": "bob", "password": "bob-password-1"}, **proxy,
                        HTTP_X_FORWARDED_FOR="198.51.100.78")  # fmt: skip
    assert signed_in(other)
