"""Microsoft: OAuth with msal (auth code flow with PKCE); mail over IMAP/SMTP with XOAUTH2."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msal
import requests
from django.conf import settings
from django.utils.translation import gettext as _

from providers.base import Account, AuthorizationRequest, LocalMailbox, MailClient, Provider, TokenGrant
from providers.errors import AuthorizationDenied, InvalidGrant, NoMailbox, ProviderError
from providers.microsoft.exchange import NO_MAILBOX_MESSAGE
from providers.validators import is_domain_name

if TYPE_CHECKING:
    from providers.models import ProviderApp

logger = logging.getLogger(__name__)

# One GET callback serves both providers (Google has no form_post); state and PKCE protect the code.
warnings.filterwarnings("ignore", message="response_mode='form_post' is recommended", category=UserWarning)
# msal raises this for an HTTP error status (a 5xx) from the token endpoint.
TRANSIENT_ERRORS = (requests.RequestException, msal.exceptions.MsalServiceError)

# msal adds openid, profile and offline_access itself (and refuses them here).
SCOPES = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
]
GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
TENANT_ALIASES = {"common", "organizations", "consumers"}


class MicrosoftProvider(Provider):
    id = "microsoft"
    extra_settings = ("tenant",)

    def setting_clean(self, field: str, value: str) -> str:
        if field == "client_id" and value and not GUID.match(value):
            raise ValueError(_("A Microsoft Application (client) ID looks like 00000000-0000-0000-0000-000000000000."))
        if field != "tenant":
            return value
        tenant = value or "common"
        if tenant.lower() in TENANT_ALIASES:
            return tenant.lower()
        if GUID.match(tenant) or is_domain_name(tenant):
            return tenant
        raise ValueError(
            _("Use common, organizations, consumers, a tenant id (GUID) or a domain such as contoso.onmicrosoft.com.")
        )

    def begin_authorization(self, *, app: ProviderApp, redirect_uri: str, state: str) -> AuthorizationRequest:
        flow = _client(app).initiate_auth_code_flow(
            SCOPES, redirect_uri=redirect_uri, state=state, prompt="select_account"
        )
        return AuthorizationRequest(url=flow["auth_uri"], flow=flow)

    def complete_authorization(
        self, *, app: ProviderApp, redirect_uri: str, flow: dict[str, Any], params: dict[str, str]
    ) -> TokenGrant:
        if params.get("error") == "access_denied":
            raise AuthorizationDenied("You cancelled the connection at Microsoft. Nothing was connected.")
        try:
            result = _client(app).acquire_token_by_auth_code_flow(flow, params, scopes=SCOPES)
        except ValueError:  # msal's own state/flow checks
            raise ProviderError("The Microsoft sign-in response did not match this request. Start again.") from None
        except TRANSIENT_ERRORS:
            raise ProviderError("Microsoft's sign-in service is unavailable. Please try again in a moment.") from None
        grant = _grant(result)
        claims = result.get("id_token_claims") or {}
        email = (claims.get("email") or claims.get("preferred_username") or "").lower()
        if "@" not in email:
            raise NoMailbox(NO_MAILBOX_MESSAGE)
        _check_mailbox(email=email, access_token=grant.access_token)
        return TokenGrant(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=grant.expires_at,
            scopes=grant.scopes,
            email=email,
            name=claims.get("name", ""),
        )

    def refresh(self, *, app: ProviderApp, refresh_token: str) -> TokenGrant:
        try:
            result = _client(app).acquire_token_by_refresh_token(refresh_token, scopes=SCOPES)
        except TRANSIENT_ERRORS:
            raise ProviderError("Microsoft could not be reached to refresh access. Will retry.") from None
        return _grant(result)

    def revoke(self, *, app: ProviderApp, token: str) -> None:
        # Microsoft has no endpoint that revokes a single refresh token; deleting it locally is what we can do.
        return None

    def mail_client(self, *, account: Account, access_token: Callable[..., str], local: LocalMailbox) -> MailClient:
        from providers.imap.client import ImapMailClient
        from providers.microsoft.exchange import outlook_transport

        transport = outlook_transport(account=account, access_token=access_token)
        return ImapMailClient(account, transport=transport, local=local)


def _check_mailbox(*, email: str, access_token: str) -> None:
    """Refuse a Microsoft account whose fresh token Outlook's IMAP server won't accept (no mailbox).

    If the server can't be reached at all, the account is connected anyway and the first sync reports it.
    """
    from providers.microsoft.exchange import imap_check_login

    try:
        imap_check_login(email=email, access_token=access_token)
    except NoMailbox:
        raise
    except ProviderError:
        logger.warning("Could not check the Outlook mailbox of a new account; the first sync will tell")


def authority(app: ProviderApp) -> str:
    return f"{settings.MICROSOFT_AUTHORITY_HOST.rstrip('/')}/{app.tenant or 'common'}"


def _client(app: ProviderApp) -> msal.ConfidentialClientApplication:
    session = requests.Session()
    session.trust_env = False
    if settings.MICROSOFT_CA_BUNDLE:
        session.verify = settings.MICROSOFT_CA_BUNDLE
    try:
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=app.client_secret,
            authority=authority(app),
            http_client=session,
            instance_discovery=False,
            token_cache=msal.TokenCache(),
        )
    except (ValueError, *TRANSIENT_ERRORS):
        # msal fetches the authority's OpenID configuration here: a bad tenant or an outage.
        raise ProviderError(
            "Microsoft's sign-in service could not be reached for this tenant. "
            "Check the tenant in Mail settings, or try again later."
        ) from None


def _grant(result: dict[str, Any]) -> TokenGrant:
    if "error" in result:
        raise _token_error(result)
    return TokenGrant(
        access_token=result["access_token"],
        refresh_token=result.get("refresh_token"),
        expires_at=datetime.now(UTC) + timedelta(seconds=int(result.get("expires_in", 3600))),
        scopes=tuple(str(result.get("scope", "")).split()),
    )


def _token_error(result: dict[str, Any]) -> ProviderError:
    error = result.get("error", "")
    if error == "invalid_grant":
        return InvalidGrant("Microsoft says this authorisation is no longer valid (expired, revoked or already used).")
    if error in {"invalid_client", "unauthorized_client"}:
        return ProviderError(
            "Microsoft rejected Mailhub's client credentials. An administrator must check Mail settings."
        )
    if error == "access_denied":
        return AuthorizationDenied("You cancelled the connection at Microsoft. Nothing was connected.")
    return ProviderError("Microsoft's sign-in service answered with an error. Please try again later.")
