"""Strict readers for the settings that decide security: an unknown value stops the process.

Every error is an ``ImproperlyConfigured`` whose message starts with the variable's name, so a typo such as
``MICROSOFT_IMAP_SECURITY=tls`` or ``SITE_ORIGIN=mail.example.com`` is reported at start-up instead of
quietly falling back to something weaker.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"true", "1", "yes", "on"}
FALSE_WORDS = {"false", "0", "no", "off"}
MAIL_SECURITY_CHOICES = ("ssl", "starttls", "none")
# The second, deliberately loud switch that allows plain-text IMAP/SMTP to a host other than this machine.
PLAINTEXT_OVERRIDE = "INSECURE_ALLOW_PLAINTEXT_MAIL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def env_bool(environ: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = _raw(environ, name)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a yes/no value: use true or false.")


def env_int(environ: Mapping[str, str], name: str, *, default: int, minimum: int, maximum: int) -> int:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
    if not minimum <= number <= maximum:
        raise ImproperlyConfigured(f"{name}={number} is out of range ({minimum} to {maximum}).")
    return number


def env_seconds(environ: Mapping[str, str], name: str, *, default: float, minimum: float, maximum: float) -> float:
    value = _raw(environ, name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number of seconds.") from None
    if not minimum <= seconds <= maximum:
        raise ImproperlyConfigured(f"{name}={value} is out of range ({minimum:g} to {maximum:g} seconds).")
    return seconds


def env_port(environ: Mapping[str, str], name: str, *, default: int) -> int:
    return env_int(environ, name, default=default, minimum=1, maximum=65535)


def env_choice(environ: Mapping[str, str], name: str, *, choices: tuple[str, ...], default: str) -> str:
    value = _raw(environ, name)
    if value is None:
        return default
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}.")


def host_is_loopback(host: str) -> bool:
    """localhost or a loopback address, decided without asking DNS."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_check(name: str, value: str, *, https_only: bool = False) -> str:
    """An absolute http(s) URL; plain http only for a loopback host (the sandbox) unless ``https_only``."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured(f"{name}={value!r} is not an absolute http(s) URL.")
    if parts.scheme == "http" and (https_only or not host_is_loopback(parts.hostname)):
        raise ImproperlyConfigured(f"{name}={value!r} must use https (plain http only for this machine).")
    return value


def env_url(environ: Mapping[str, str], name: str, *, default: str, https_only: bool = False) -> str:
    value = _raw(environ, name)
    return default if value is None else url_check(name, value, https_only=https_only)


def env_origin(environ: Mapping[str, str], name: str) -> str:
    """``""`` or ``scheme://host[:port]`` with nothing after it (no path, query or trailing slash)."""
    value = _raw(environ, name)
    if value is None:
        return ""
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} has an invalid port.") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not an origin such as https://mail.example.com (scheme and host, no path)."
        )
    return f"{parts.scheme}://{parts.netloc}"


def env_proxy_ssl_header(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` (the header a TLS-terminating proxy sets to ``https``) as Django's META pair."""
    value = _raw(environ, name)
    if value is None:
        return None
    header, _, expected = value.partition("=")
    header = header.strip()
    if not header or not all(c.isalnum() or c == "-" for c in header):
        raise ImproperlyConfigured(f"{name}={value!r} is not a header name such as X-Forwarded-Proto.")
    return "HTTP_" + header.upper().replace("-", "_"), (expected.strip() or "https")


def mail_security(*, variable: str, value: str, host: str, allow_plaintext: bool) -> str:
    """``ssl``, ``starttls`` or ``none`` (any case); ``none`` only for a loopback host or with the override.

    Used at start-up for the environment and again by the IMAP and SMTP code before every connection,
    so a value set some other way (a test, a shell) cannot reach the wire unchecked either.
    """
    security = str(value).strip().lower()
    if security not in MAIL_SECURITY_CHOICES:
        raise ImproperlyConfigured(f"{variable}={value!r} is not one of: {', '.join(MAIL_SECURITY_CHOICES)}.")
    if security == "none" and not allow_plaintext and not host_is_loopback(host):
        raise ImproperlyConfigured(
            f"{variable}=none would send the login token in clear text to {host}: plain text is allowed only to "
            f"this machine, or with {PLAINTEXT_OVERRIDE}=true."
        )
    return security
