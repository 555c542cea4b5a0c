"""The Google identity stand-in, driven over HTTP by google-auth-oauthlib and google-auth, unmodified."""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import parse_qs, urlsplit

import google.oauth2.credentials
import pytest
import requests
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import id_token as google_id_token
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import InvalidClientError, InvalidGrantError, ServerError

REDIRECT_URI = "http://127.0.0.1:8000/admin/settings/mail/oauth2"
SCOPES = [
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/gmail.modify",
]


@pytest.fixture(autouse=True)
def _clean(sandbox, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    sandbox.reset()
    yield
    sandbox.reset()


@pytest.fixture
def client(sandbox) -> tuple[str, str]:
    client_id, secret = f"{secrets.token_hex(6)}.apps.googleusercontent.com", "GOCSPX-" + secrets.token_urlsafe(12)
    sandbox.google.register_client(client_id, secret, name="Mailhub Test")
    return client_id, secret


def make_flow(sandbox, client, *, secret: str | None = None, redirect_uri: str = REDIRECT_URI, **kwargs) -> Flow:
    env = sandbox.env()
    config = {
        "web": {
            "client_id": client[0],
            "client_secret": secret or client[1],
            "auth_uri": env["GOOGLE_AUTH_URI"],
            "token_uri": env["GOOGLE_TOKEN_URI"],
        }
    }
    return Flow.from_client_config(config, scopes=SCOPES, redirect_uri=redirect_uri, **kwargs)


def authorize(flow: Flow, **params) -> tuple[str, str]:
    params.setdefault("access_type", "offline")
    params.setdefault("prompt", "consent")
    return flow.authorization_url(**params)


def token_post(sandbox, data: dict, auth: tuple[str, str] | None = None) -> requests.Response:
    return requests.post(sandbox.env()["GOOGLE_TOKEN_URI"], data=data, auth=auth, timeout=5)


def code_of(location: str) -> str:
    return parse_qs(urlsplit(location).query)["code"][0]


def test_consent_page_shows_app_scopes_and_hinted_email(sandbox, client):
    url, _ = authorize(make_flow(sandbox, client), login_hint="ann@gmail.com")
    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    assert "Mailhub Test" in page.text
    assert "https://www.googleapis.com/auth/gmail.modify" in page.text
    assert re.search(r'<input[^>]*id="email"[^>]*value="ann@gmail.com"', page.text)
    assert 'id="allow" name="decision" value="allow"' in page.text
    assert 'id="deny" name="decision" value="deny"' in page.text


def test_happy_path_code_exchange_id_token_userinfo_and_refresh(sandbox, client):
    flow = make_flow(sandbox, client)
    url, state = authorize(flow)
    # The consent form posts back to the authorize URL with the chosen account and decision.
    answer = requests.post(url, data={"email": "ann@gmail.com", "decision": "allow"}, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert parse_qs(urlsplit(location).query)["state"] == [state]

    token = flow.fetch_token(code=code_of(location))
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == SCOPES
    credentials = flow.credentials
    assert credentials.token.startswith("ya29.") and credentials.refresh_token.startswith("1//")

    claims = google_id_token.verify_token(
        credentials.id_token, GoogleRequest(), audience=client[0], certs_url=f"{sandbox.google_url}/oauth2/v1/certs"
    )
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["email"] == "ann@gmail.com" and claims["email_verified"] is True

    userinfo = requests.get(
        sandbox.env()["GOOGLE_USERINFO_URI"], headers={"Authorization": f"Bearer {credentials.token}"}, timeout=5
    )
    assert userinfo.json() == {"sub": claims["sub"], "email": "ann@gmail.com", "email_verified": True}

    old = credentials.token
    refreshed = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=credentials.refresh_token,
        token_uri=sandbox.env()["GOOGLE_TOKEN_URI"],
        client_id=client[0],
        client_secret=client[1],
    )
    refreshed.refresh(GoogleRequest())
    assert refreshed.token and refreshed.token != old
    assert refreshed.refresh_token == credentials.refresh_token  # Google does not rotate
    assert refreshed.expiry is not None
    assert [t.kind for t in sandbox.google.issued_tokens(email="ann@gmail.com")].count("access") == 2


def test_login_hint_and_default_user(sandbox, client):
    location = sandbox.google.consent(authorize(make_flow(sandbox, client), login_hint="hinted@gmail.com")[0])
    assert sandbox.google.issued_codes()[0].email == "hinted@gmail.com"
    sandbox.google.consent(authorize(make_flow(sandbox, client))[0])
    assert sandbox.google.issued_codes()[1].email == sandbox.google.default_email
    assert "code=" in location


def test_deny_redirects_with_access_denied_and_state(sandbox, client):
    url, state = authorize(make_flow(sandbox, client))
    location = sandbox.google.consent(url, allow=False)
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["access_denied"] and query["state"] == [state]
    assert "code" not in query


def test_pkce_verifier_mismatch_is_invalid_grant(sandbox, client):
    flow = make_flow(sandbox, client, code_verifier="a" * 50)
    location = sandbox.google.consent(authorize(flow)[0])
    flow.code_verifier = "b" * 50
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(code=code_of(location))
    missing = token_post(
        sandbox,
        {"grant_type": "authorization_code", "code": code_of(location), "redirect_uri": REDIRECT_URI},
        auth=client,
    )
    assert missing.status_code == 400
    assert missing.json() == {"error": "invalid_grant", "error_description": "Missing code verifier."}


def test_plain_pkce_is_accepted(sandbox, client):
    url, _ = authorize(make_flow(sandbox, client, autogenerate_code_verifier=False))
    location = sandbox.google.consent(
        url + "&code_challenge=plain-verifier-1234567890-abcdefghijklmnop&code_challenge_method=plain"
    )
    answer = token_post(
        sandbox,
        {
            "grant_type": "authorization_code",
            "code": code_of(location),
            "redirect_uri": REDIRECT_URI,
            "code_verifier": "plain-verifier-1234567890-abcdefghijklmnop",
        },
        auth=client,
    )
    assert answer.status_code == 200, answer.text


def test_redirect_uri_must_match_exactly(sandbox, client):
    flow = make_flow(sandbox, client)
    location = sandbox.google.consent(authorize(flow)[0])
    answer = token_post(
        sandbox,
        {
            "grant_type": "authorization_code",
            "code": code_of(location),
            "redirect_uri": REDIRECT_URI + "/",
            "code_verifier": flow.code_verifier,
        },
        auth=client,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "redirect_uri_mismatch"
    flow.fetch_token(code=code_of(location))  # the failed attempt did not burn the code


def test_registered_redirect_uris_are_enforced_at_authorize(sandbox):
    sandbox.google.register_client("strict-client", "s3cret", [REDIRECT_URI])
    flow = make_flow(sandbox, ("strict-client", "s3cret"), redirect_uri="http://evil.example/cb")
    page = requests.get(authorize(flow)[0], allow_redirects=False, timeout=5)
    assert page.status_code == 400 and "redirect_uri_mismatch" in page.text


def test_code_is_single_use(sandbox, client):
    flow = make_flow(sandbox, client)
    code = code_of(sandbox.google.consent(authorize(flow)[0]))
    flow.fetch_token(code=code)
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(code=code)


def test_expired_code_is_invalid_grant(sandbox, client):
    flow = make_flow(sandbox, client)
    code = code_of(sandbox.google.consent(authorize(flow)[0]))
    assert 55 <= sandbox.google.issued_codes()[0].expires_at - time.time() <= 60
    sandbox.google.expire_codes()
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(code=code)


def test_client_authentication_basic_and_form(sandbox, client):
    flow = make_flow(sandbox, client)
    code = code_of(sandbox.google.consent(authorize(flow)[0]))
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": flow.code_verifier,
    }

    wrong = token_post(sandbox, data, auth=(client[0], "wrong"))
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "invalid_client", "error_description": "Unauthorized"}
    unknown = token_post(sandbox, data, auth=("nobody", "x"))
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"

    ok = token_post(sandbox, {**data, "client_id": client[0], "client_secret": client[1]})
    assert ok.status_code == 200 and "refresh_token" in ok.json()


def test_bad_client_secret_through_flow(sandbox, client):
    flow = make_flow(sandbox, client, secret="not-the-secret")
    code = code_of(sandbox.google.consent(authorize(flow)[0]))
    with pytest.raises(InvalidClientError):
        flow.fetch_token(code=code)


def test_refresh_token_only_on_first_consent_or_prompt_consent(sandbox, client):
    first = make_flow(sandbox, client)
    first.fetch_token(code=code_of(sandbox.google.consent(authorize(first)[0], email="ann@gmail.com")))
    assert first.credentials.refresh_token

    again = make_flow(sandbox, client)
    url, _ = authorize(again, prompt="select_account")
    again.fetch_token(code=code_of(sandbox.google.consent(url, email="ann@gmail.com")))
    assert again.credentials.refresh_token is None

    online = make_flow(sandbox, client)
    url, _ = online.authorization_url(access_type="online", prompt="consent")  # Flow defaults to offline
    online.fetch_token(code=code_of(sandbox.google.consent(url, email="bea@gmail.com")))
    assert online.credentials.refresh_token is None

    forced = make_flow(sandbox, client)
    forced.fetch_token(code=code_of(sandbox.google.consent(authorize(forced)[0], email="ann@gmail.com")))
    assert forced.credentials.refresh_token not in (None, first.credentials.refresh_token)


def test_revoke_refresh_token_kills_its_access_tokens(sandbox, client):
    flow = make_flow(sandbox, client)
    flow.fetch_token(code=code_of(sandbox.google.consent(authorize(flow)[0], email="ann@gmail.com")))
    credentials = flow.credentials
    revoke_uri = sandbox.env()["GOOGLE_REVOKE_URI"]

    assert requests.post(revoke_uri, data={"token": credentials.refresh_token}, timeout=5).status_code == 200
    userinfo = requests.get(
        sandbox.env()["GOOGLE_USERINFO_URI"], headers={"Authorization": f"Bearer {credentials.token}"}, timeout=5
    )
    assert userinfo.status_code == 401 and userinfo.json()["error"] == "invalid_token"
    with pytest.raises(RefreshError, match="invalid_grant"):
        credentials.refresh(GoogleRequest())

    again = requests.post(f"{revoke_uri}?token={credentials.token}", timeout=5)
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"


def test_controls_revoke_user_and_expire_access_tokens(sandbox, client):
    flow = make_flow(sandbox, client)
    flow.fetch_token(code=code_of(sandbox.google.consent(authorize(flow)[0], email="ann@gmail.com")))
    token = flow.credentials.token
    userinfo_uri = sandbox.env()["GOOGLE_USERINFO_URI"]

    sandbox.google.expire_access_tokens("ann@gmail.com")
    assert requests.get(userinfo_uri, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 401
    flow.credentials.refresh(GoogleRequest())  # the refresh token still works

    assert sandbox.google.revoke_user("ann@gmail.com") >= 2
    with pytest.raises(RefreshError, match="invalid_grant"):
        flow.credentials.refresh(GoogleRequest())


def test_injected_failures(sandbox, client):
    flow = make_flow(sandbox, client)
    code = code_of(sandbox.google.consent(authorize(flow)[0]))
    sandbox.google.fail_token_endpoint(2, status=503, retry_after=7)
    with pytest.raises(ServerError):
        flow.fetch_token(code=code)
    raw = token_post(sandbox, {"grant_type": "authorization_code"}, auth=client)
    assert raw.status_code == 503 and raw.headers["Retry-After"] == "7"
    assert raw.json()["error"] == "server_error"

    sandbox.google.fail_token_endpoint(error="invalid_grant", description="Token has been expired or revoked.")
    with pytest.raises(InvalidGrantError):
        flow.fetch_token(code=code)
    flow.fetch_token(code=code)  # failures are used up; the code was never consumed
    assert sandbox.google.token_endpoint_calls == 4


def test_id_token_only_with_openid_and_scope_narrowing_on_refresh(sandbox, client):
    env = sandbox.env()
    config = {
        "web": {
            "client_id": client[0],
            "client_secret": client[1],
            "auth_uri": env["GOOGLE_AUTH_URI"],
            "token_uri": env["GOOGLE_TOKEN_URI"],
        }
    }
    flow = Flow.from_client_config(
        config, scopes=["https://www.googleapis.com/auth/gmail.modify"], redirect_uri=REDIRECT_URI
    )
    url, _ = flow.authorization_url(access_type="offline", prompt="consent")
    token = flow.fetch_token(code=code_of(sandbox.google.consent(url)))
    assert "id_token" not in token

    narrowed = token_post(
        sandbox,
        {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "scope": "https://mail.google.com/"},
        auth=client,
    )
    assert narrowed.status_code == 400 and narrowed.json()["error"] == "invalid_scope"


def test_unknown_scope_and_unknown_client_at_authorize(sandbox, client):
    base = sandbox.env()["GOOGLE_AUTH_URI"]
    unknown_client = requests.get(
        base,
        params={"client_id": "nope", "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "email"},
        timeout=5,
    )
    assert unknown_client.status_code == 401 and "invalid_client" in unknown_client.text
    bad_scope = requests.get(
        base,
        params={
            "client_id": client[0],
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": "https://outlook.office.com/IMAP.AccessAsUser.All",
            "state": "s1",
        },
        allow_redirects=False,
        timeout=5,
    )
    assert bad_scope.status_code == 302
    assert parse_qs(urlsplit(bad_scope.headers["Location"]).query)["error"] == ["invalid_scope"]


def test_access_token_lifetime_is_configurable(sandbox, client, monkeypatch):
    monkeypatch.setattr(sandbox.google, "access_token_lifetime", 120)
    flow = make_flow(sandbox, client)
    token = flow.fetch_token(code=code_of(sandbox.google.consent(authorize(flow)[0])))
    assert token["expires_in"] == 120


def test_gmail_api_is_mounted_and_accepts_issued_tokens(sandbox, client):
    assert sandbox.has_gmail_api and sandbox.gmail is not None
    flow = make_flow(sandbox, client)
    flow.fetch_token(code=code_of(sandbox.google.consent(authorize(flow)[0], email="ann@gmail.com")))
    profile_url = f"{sandbox.env()['GOOGLE_API_ROOT']}gmail/v1/users/me/profile"
    profile = requests.get(profile_url, headers={"Authorization": f"Bearer {flow.credentials.token}"}, timeout=5)
    assert profile.status_code == 200 and profile.json()["emailAddress"] == "ann@gmail.com"
    sandbox.google.revoke_user("ann@gmail.com")
    refused = requests.get(profile_url, headers={"Authorization": f"Bearer {flow.credentials.token}"}, timeout=5)
    assert refused.status_code == 401
