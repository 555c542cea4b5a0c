"""Google: OAuth with google-auth-oauthlib (PKCE, offline access); mail through the Gmail API."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.auth.transport.requests import Request
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from providers.base import Account, AuthorizationRequest, LocalMailbox, MailClient, Provider, TokenGrant
from providers.errors import AuthorizationDenied, InvalidGrant, ProviderError

if TYPE_CHECKING:
    from providers.models import ProviderApp

logger = logging.getLogger(__name__)

GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
# gmail.modify reads, labels and sends without the full https://mail.google.com/ scope.
SCOPES = ["openid", "https://www.googleapis.com/auth/userinfo.email", GMAIL_SCOPE]
TIMEOUT = 30


class GoogleProvider(Provider):
    id = "google"
    deletes_forever = False  # messages.delete needs the full https://mail.google.com/ scope
    folders_are_labels = True
    extra_settings = ("quota_units_per_minute",)

    def send_interval(self, *, email: str) -> float:
        """Gmail sends about 500 messages a day from a consumer account and 2,000 from Workspace: spread them."""
        consumer = email.lower().rsplit("@", 1)[-1] in ("gmail.com", "googlemail.com")
        return 86400.0 / (500 if consumer else 2000)

    def begin_authorization(self, *, app: ProviderApp, redirect_uri: str, state: str) -> AuthorizationRequest:
        flow = _flow(app=app, redirect_uri=redirect_uri)
        url, _ = flow.authorization_url(
            state=state, access_type="offline", prompt="consent", include_granted_scopes="true"
        )
        return AuthorizationRequest(url=url, flow={"code_verifier": flow.code_verifier})

    def complete_authorization(
        self, *, app: ProviderApp, redirect_uri: str, flow: dict[str, Any], params: dict[str, str]
    ) -> TokenGrant:
        _raise_for_callback_error(params)
        oauth_flow = _flow(app=app, redirect_uri=redirect_uri, code_verifier=flow.get("code_verifier"))
        try:
            token = oauth_flow.fetch_token(code=params.get("code", ""), timeout=TIMEOUT)
        except OAuth2Error as exc:
            raise _token_error(exc.error) from None
        except requests.RequestException:
            raise ProviderError("Google could not be reached. Please try again in a moment.") from None
        except ValueError:  # a 5xx page that is not an OAuth response
            raise ProviderError("Google's sign-in service answered with an error. Please try again later.") from None
        granted = tuple(_scopes(token.get("scope")))
        if GMAIL_SCOPE not in granted:
            raise AuthorizationDenied(
                "Mailhub needs permission to read, organise and send your Gmail. "
                "Connect again and leave the Gmail box ticked on Google's consent screen."
            )
        email, name = _userinfo(access_token=token["access_token"])
        return TokenGrant(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            expires_at=_expiry(token.get("expires_in")),
            scopes=granted,
            email=email,
            name=name,
        )

    def refresh(self, *, app: ProviderApp, refresh_token: str) -> TokenGrant:
        credentials = Credentials(
            token=None,
            refresh_token=refresh_token,
            token_uri=settings.GOOGLE_TOKEN_URI,
            client_id=app.client_id,
            client_secret=app.client_secret,
        )
        try:
            credentials.refresh(Request())
        except RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            raise _token_error(data.get("error", "")) from None
        except (TransportError, GoogleAuthError):
            raise ProviderError("Google could not be reached to refresh access. Will retry.") from None
        expiry = credentials.expiry.replace(tzinfo=UTC) if credentials.expiry else _expiry(None)
        return TokenGrant(
            access_token=credentials.token,
            refresh_token=credentials.refresh_token if credentials.refresh_token != refresh_token else None,
            expires_at=expiry,
            scopes=tuple(credentials.granted_scopes or ()),
        )

    def revoke(self, *, app: ProviderApp, token: str) -> None:
        try:
            response = requests.post(settings.GOOGLE_REVOKE_URI, data={"token": token}, timeout=TIMEOUT)
        except requests.RequestException:
            logger.warning("Google revoke endpoint unreachable; the token will expire on its own")
            return
        if response.status_code >= 400:
            logger.warning("Google revoke answered HTTP %s", response.status_code)

    def mail_client(self, *, account: Account, access_token: Callable[..., str], local: LocalMailbox) -> MailClient:
        from providers.google.mail import GmailClient
        from providers.google.quota import PROJECT_UNITS_PER_MINUTE
        from providers.models import ProviderApp

        # Read when a sync or send starts: a changed limit applies from the next one.
        quota = ProviderApp.objects.filter(provider=self.id).values_list("quota_units_per_minute", flat=True).first()
        return GmailClient(
            account, access_token=access_token, local=local, project_limit=quota or PROJECT_UNITS_PER_MINUTE
        )


def _flow(*, app: ProviderApp, redirect_uri: str, code_verifier: str | None = None) -> Flow:
    config = {
        "web": {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "auth_uri": settings.GOOGLE_AUTH_URI,
            "token_uri": settings.GOOGLE_TOKEN_URI,
        }
    }
    return Flow.from_client_config(
        config,
        scopes=SCOPES,
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        autogenerate_code_verifier=code_verifier is None,
    )


def _raise_for_callback_error(params: dict[str, str]) -> None:
    error = params.get("error")
    if not error:
        return
    if error == "access_denied":
        raise AuthorizationDenied("You cancelled the connection at Google. Nothing was connected.")
    raise ProviderError("Google refused the sign-in request. Check the Google settings and try again.")


def _token_error(error: str) -> ProviderError:
    if error == "invalid_grant":
        return InvalidGrant("Google says this authorisation is no longer valid (expired, revoked or already used).")
    if error in {"invalid_client", "unauthorized_client"}:
        return ProviderError("Google rejected Mailhub's client credentials. An administrator must check Mail settings.")
    return ProviderError("Google's sign-in service answered with an error. Please try again later.")


def _scopes(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    return value.split() if isinstance(value, str) else list(value)


def _expiry(expires_in: object) -> datetime:
    seconds = int(expires_in) if isinstance(expires_in, int | float | str) and str(expires_in).isdigit() else 3600
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _userinfo(*, access_token: str) -> tuple[str, str]:
    try:
        response = requests.get(
            settings.GOOGLE_USERINFO_URI, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT
        )
    except requests.RequestException:
        raise ProviderError("Google could not be reached. Please try again in a moment.") from None
    if response.status_code != 200:
        raise ProviderError("Google did not tell us which mailbox you signed in with. Please try again.")
    info = response.json()
    if not info.get("email") or info.get("email_verified") is False:
        raise ProviderError("Google did not return a verified email address for this account.")
    return info["email"].lower(), info.get("name", "")
