"""The Microsoft identity stand-in over HTTPS, driven by msal unmodified; and its token introspection."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from urllib.parse import parse_qs, parse_qsl, urlsplit

import jwt
import msal
import pytest
import requests
from msal.exceptions import MsalServiceError

from sandbox.microsoft_identity import CONSUMERS_TENANT_ID, SANDBOX_TENANT_ID

REDIRECT_URI = "http://127.0.0.1:8000/admin/settings/mail/oauth2"
SCOPES = ["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"]


@pytest.fixture(autouse=True)
def _clean(sandbox):
    sandbox.reset()
    yield
    sandbox.reset()


@pytest.fixture
def client(sandbox) -> tuple[str, str]:
    client_id, secret = str(uuid.uuid4()), "sbx~" + secrets.token_urlsafe(16)
    sandbox.microsoft.register_client(client_id, secret, name="Mailhub Test")
    return client_id, secret


def https_session(sandbox) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = sandbox.ca_path
    return session


def make_app(
    sandbox, client, *, tenant: str = "common", secret: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client[0],
        client_credential=secret or client[1],
        authority=f"{sandbox.microsoft_url}/{tenant}",
        http_client=https_session(sandbox),
        instance_discovery=False,
    )


def start(app, sandbox, *, email: str = "mia@outlook.example", allow: bool = True, **kwargs) -> tuple[dict, dict]:
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, state=secrets.token_urlsafe(8), **kwargs)
    location = sandbox.microsoft.consent(flow["auth_uri"], email=email, allow=allow)
    return flow, dict(parse_qsl(urlsplit(location).query))


def connect(sandbox, client, **kwargs) -> dict:
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox, **kwargs)
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    return result


def introspect(url: str, token: str, sandbox=None, **kwargs) -> dict:
    response = requests.post(
        url, data={"token": token}, verify=sandbox.ca_path if sandbox else True, timeout=5, **kwargs
    )
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers", "3f0e8a4c-1b2d-4c5e-8f90-a1b2c3d4e5f6"])
def test_discovery_uses_the_tenant_in_the_path(sandbox, tenant):
    url = f"{sandbox.microsoft_url}/{tenant}/v2.0/.well-known/openid-configuration"
    config = https_session(sandbox).get(url, timeout=5).json()
    # Browsers sign in on plain HTTP (no sandbox CA to trust); msal's own calls stay on HTTPS.
    assert config["authorization_endpoint"] == f"{sandbox.microsoft.sign_in_url}/{tenant}/oauth2/v2.0/authorize"
    assert sandbox.microsoft.sign_in_url.startswith("http://127.0.0.1:")
    assert config["token_endpoint"] == f"{sandbox.microsoft_url}/{tenant}/oauth2/v2.0/token"
    assert config["jwks_uri"].startswith(f"{sandbox.microsoft_url}/{tenant}/")
    assert config["issuer"].startswith(sandbox.microsoft_url + "/")


def test_the_plain_http_sign_in_server_serves_only_the_consent_page(sandbox, client):
    base = sandbox.microsoft.sign_in_url
    query = {"client_id": client[0], "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "openid"}
    consent = requests.get(f"{base}/common/oauth2/v2.0/authorize", params=query, timeout=5)
    assert consent.status_code == 200 and "<form" in consent.text
    for path in ("/common/oauth2/v2.0/token", "/common/v2.0/.well-known/openid-configuration", "/introspect"):
        assert requests.post(f"{base}{path}", timeout=5).status_code == 404, path


def test_server_certificate_needs_the_sandbox_ca(sandbox):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sandbox.microsoft_url}/common/v2.0/.well-known/openid-configuration", timeout=5)


def test_auth_code_flow_with_msal(sandbox, client):
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox, email="mia@outlook.example", login_hint="mia@outlook.example")
    page = https_session(sandbox).get(flow["auth_uri"], timeout=5).text
    assert "Mailhub Test" in page and "IMAP.AccessAsUser.All" in page and 'value="mia@outlook.example"' in page
    assert response["state"] == flow["state"] and "client_info" in response

    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600
    assert set(SCOPES) <= set(result["scope"].split())
    assert result["refresh_token"]
    claims = result["id_token_claims"]
    assert claims["aud"] == client[0]
    assert claims["preferred_username"] == claims["email"] == "mia@outlook.example"
    assert claims["tid"] == SANDBOX_TENANT_ID and claims["iss"] == f"{sandbox.microsoft_url}/{SANDBOX_TENANT_ID}/v2.0"
    assert {"exp", "iat", "nonce", "oid", "sub", "name"} <= set(claims)

    keys = https_session(sandbox).get(f"{sandbox.microsoft_url}/common/discovery/v2.0/keys", timeout=5).json()
    header = jwt.get_unverified_header(result["id_token"])
    key = next(jwt.PyJWK(k) for k in keys["keys"] if k["kid"] == header["kid"])
    verified = jwt.decode(result["id_token"], key.key, algorithms=["RS256"], audience=client[0])
    assert verified["oid"] == claims["oid"]

    client_info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert client_info == {"uid": claims["oid"], "utid": claims["tid"]}
    assert [a["username"] for a in app.get_accounts()] == ["mia@outlook.example"]


GUID_TENANT = "3f0e8a4c-1b2d-4c5e-8f90-a1b2c3d4e5f6"


@pytest.mark.parametrize(("tenant", "expected_tid"), [("consumers", CONSUMERS_TENANT_ID), (GUID_TENANT, GUID_TENANT)])
def test_tenant_reaches_the_id_token(sandbox, client, tenant, expected_tid):
    app = make_app(sandbox, client, tenant=tenant)
    result = app.acquire_token_by_auth_code_flow(*start(app, sandbox))
    assert result["id_token_claims"]["tid"] == expected_tid


def test_deny_returns_access_denied(sandbox, client):
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox, allow=False)
    assert response["error"] == "access_denied" and response["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "access_denied"
    assert sandbox.microsoft.token_endpoint_calls == 0


def test_pkce_mismatch(sandbox, client):
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox)
    flow["code_verifier"] = "x" * 50
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [50148]


def test_redirect_uri_mismatch(sandbox, client):
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox)
    flow["redirect_uri"] = REDIRECT_URI + "/other"
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [50011]


def test_code_reuse_and_expiry(sandbox, client):
    app = make_app(sandbox, client)
    flow, response = start(app, sandbox)
    assert "access_token" in app.acquire_token_by_auth_code_flow(dict(flow), response)
    reused = app.acquire_token_by_auth_code_flow(dict(flow), response)
    assert reused["error"] == "invalid_grant" and reused["error_codes"] == [54005]
    assert reused["error_description"].startswith("AADSTS54005:")

    flow, response = start(app, sandbox)
    sandbox.microsoft.expire_codes()
    expired = app.acquire_token_by_auth_code_flow(flow, response)
    assert expired["error"] == "invalid_grant" and expired["error_codes"] == [70008]


def test_bad_client_secret(sandbox, client):
    app = make_app(sandbox, client, secret="wrong-secret")
    result = app.acquire_token_by_auth_code_flow(*start(app, sandbox))
    assert result["error"] == "invalid_client" and result["error_codes"] == [7000215]
    assert "wrong-secret" not in json.dumps(result)
    raw = https_session(sandbox).post(
        f"{sandbox.microsoft_url}/common/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": client[0], "client_secret": "no"},
        timeout=5,
    )
    assert raw.status_code == 401 and raw.json()["error"] == "invalid_client"


def test_refresh_tokens_rotate(sandbox, client):
    first = connect(sandbox, client)
    app = make_app(sandbox, client)
    second = app.acquire_token_by_refresh_token(first["refresh_token"], SCOPES[:1])
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert "SMTP.Send" not in second["scope"]

    stale = make_app(sandbox, client).acquire_token_by_refresh_token(first["refresh_token"], SCOPES)
    assert stale["error"] == "invalid_grant" and stale["error_codes"] == [70000]
    assert stale["error_description"].startswith("AADSTS70000:")
    assert first["refresh_token"] not in stale["error_description"]

    # The rotated token keeps the whole consented grant, not just the scopes of the last request.
    third = make_app(sandbox, client).acquire_token_by_refresh_token(second["refresh_token"], SCOPES)
    assert set(SCOPES) <= set(third["scope"].split())
    unconsented = make_app(sandbox, client).acquire_token_by_refresh_token(
        third["refresh_token"], ["https://graph.microsoft.com/Mail.Read"]
    )
    assert unconsented["error"] == "invalid_grant" and unconsented["error_codes"] == [65001]


def test_revoked_user_cannot_refresh_and_tokens_go_inactive(sandbox, client):
    result = connect(sandbox, client, email="rev@outlook.example")
    assert introspect(sandbox.microsoft_introspection_url, result["access_token"])["active"] is True
    assert sandbox.microsoft.revoke_user("rev@outlook.example") == 2
    refreshed = make_app(sandbox, client).acquire_token_by_refresh_token(result["refresh_token"], SCOPES)
    assert refreshed["error"] == "invalid_grant" and refreshed["error_codes"] == [50173]
    assert introspect(sandbox.microsoft_introspection_url, result["access_token"]) == {"active": False}


def test_injected_failures(sandbox, client):
    result = connect(sandbox, client)
    sandbox.microsoft.fail_token_endpoint(status=503)
    with pytest.raises(MsalServiceError, match="503"):  # msal raises on 5xx rather than returning an error dict
        make_app(sandbox, client).acquire_token_by_refresh_token(result["refresh_token"], SCOPES)
    sandbox.microsoft.fail_token_endpoint(error="invalid_grant", description="AADSTS50173: revoked.")
    refused = make_app(sandbox, client).acquire_token_by_refresh_token(result["refresh_token"], SCOPES)
    assert refused["error"] == "invalid_grant"
    # Injected failures never consumed the refresh token.
    assert "access_token" in make_app(sandbox, client).acquire_token_by_refresh_token(result["refresh_token"], SCOPES)


def test_introspection_on_both_urls(sandbox, client):
    result = connect(sandbox, client, email="imap@outlook.example")
    token = result["access_token"]
    for url, ca in ((sandbox.microsoft_introspection_url, None), (sandbox.microsoft_introspection_https_url, sandbox)):
        info = introspect(url, token, ca)
        assert info["active"] is True
        assert info["email"] == info["username"] == "imap@outlook.example"
        assert set(SCOPES) <= set(info["scope"].split())
        assert info["exp"] > 0 and info["mailbox"] == "yes"
    assert sandbox.microsoft_introspection_url.startswith("http://127.0.0.1:")

    # Dovecot's other introspection modes: Bearer header (auth) and token in the URL (get).
    by_header = requests.get(
        sandbox.microsoft_introspection_url, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert by_header.json()["active"] is True
    by_query = requests.get(f"{sandbox.microsoft_introspection_url}?token={token}", timeout=5)
    assert by_query.json()["active"] is True

    assert introspect(sandbox.microsoft_introspection_url, "EwB-not-a-token") == {"active": False}
    sandbox.microsoft.expire_access_tokens("imap@outlook.example")
    assert introspect(sandbox.microsoft_introspection_url, token) == {"active": False}


def test_users_without_mailbox(sandbox, client):
    sandbox.microsoft.add_user("nobox@outlook.example", name="No Box", has_mailbox=False)
    assert "nobox@outlook.example" in sandbox.microsoft.users_without_mailbox()
    token = connect(sandbox, client, email="nobox@outlook.example")["access_token"]
    assert introspect(sandbox.microsoft_introspection_url, token)["mailbox"] == "no"
    strict = f"{sandbox.microsoft_introspection_url}?require_mailbox=1"
    assert introspect(strict, token) == {"active": False}


def test_google_tokens_are_not_microsoft_tokens(sandbox):
    google_token = sandbox.tokens.issue(
        kind="access", provider="google", client_id="g", email="g@gmail.com", scopes=("email",), lifetime=60
    )
    assert introspect(sandbox.microsoft_introspection_url, google_token.value) == {"active": False}


def test_unknown_scope_is_refused_at_authorize(sandbox, client):
    url = f"{sandbox.microsoft_url}/common/oauth2/v2.0/authorize"
    response = https_session(sandbox).get(
        url,
        params={
            "client_id": client[0],
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "https://mail.google.com/ offline_access",
            "state": "s",
        },
        allow_redirects=False,
        timeout=5,
    )
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["invalid_scope"] and query["state"] == ["s"]


def test_form_post_response_mode(sandbox, client):
    app = make_app(sandbox, client)
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, response_mode="form_post")
    page = https_session(sandbox).post(flow["auth_uri"], data={"decision": "allow"}, allow_redirects=False, timeout=5)
    assert page.status_code == 200
    assert f'action="{REDIRECT_URI}"' in page.text and 'name="code"' in page.text


def test_controls_list_and_reset(sandbox, client):
    connect(sandbox, client, email="list@outlook.example")
    assert {t.kind for t in sandbox.microsoft.issued_tokens(email="list@outlook.example")} == {"access", "refresh"}
    assert [c.email for c in sandbox.microsoft.issued_codes()] == ["list@outlook.example"]
    sandbox.microsoft.fail_token_endpoint(3)
    sandbox.reset()
    assert sandbox.microsoft.issued_tokens() == [] and sandbox.microsoft.issued_codes() == []
    connect(sandbox, client)  # no leftover injected failure


def test_sandbox_settings_and_provider_app_fixtures(sandbox_settings, settings, google_app, microsoft_app):
    import os

    assert os.environ["OAUTHLIB_INSECURE_TRANSPORT"] == "1"
    env = sandbox_settings.env()
    assert {name: getattr(settings, name) for name in env} == env
    assert env["MICROSOFT_AUTHORITY_HOST"] == sandbox_settings.microsoft_url
    assert env["GOOGLE_API_ROOT"] == f"{sandbox_settings.google_url}/"
    assert google_app.is_usable and microsoft_app.is_usable and microsoft_app.tenant == "common"
    microsoft_app.refresh_from_db()
    result = connect(sandbox_settings, (microsoft_app.client_id, microsoft_app.client_secret))
    assert result["id_token_claims"]["aud"] == microsoft_app.client_id


def test_a_silent_connection_does_not_stall_the_https_server(sandbox):
    import socket

    port = int(sandbox.microsoft_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)):  # a port probe: connects, never says hello
        config = https_session(sandbox).get(
            f"{sandbox.microsoft_url}/common/v2.0/.well-known/openid-configuration", timeout=3
        )
        assert config.status_code == 200
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port is dropped, not served
        requests.get(f"http://127.0.0.1:{port}/common/v2.0/.well-known/openid-configuration", timeout=3)


def test_refresh_rotation_is_atomic_under_concurrency(sandbox, client):
    from concurrent.futures import ThreadPoolExecutor

    refresh_token = connect(sandbox, client)["refresh_token"]

    def redeem(_: int) -> dict:
        return make_app(sandbox, client).acquire_token_by_refresh_token(refresh_token, SCOPES)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(redeem, range(8)))
    assert sum("access_token" in r for r in results) == 1
    assert all(r.get("error") == "invalid_grant" for r in results if "access_token" not in r)
