"""Keep OAuth codes, states, tokens and passwords out of every log line.

Two layers: gunicorn's access log never writes a query string or a Referer (``mailhub.gunicorn_conf``), and
every handler (Django's console, gunicorn's error log) passes records through :class:`SecretsRedactingFilter`,
which blanks the value of any URL or form parameter named like a secret (``code=…`` → ``code=[redacted]``).
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMETERS = (
    "code",
    "state",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "password",
    "token",
    "assertion",
    "code_verifier",
    "session_state",
)
_SECRET_PARAMETER = re.compile(r"(?i)(?<![A-Za-z0-9_])(" + "|".join(SECRET_PARAMETERS) + r")=([^&\s\"'<>]+)")
_BEARER = re.compile(r"(?i)\b(bearer|xoauth2)\s+[A-Za-z0-9._~+/=-]{8,}")


def secrets_redact(text: str) -> str:
    text = _SECRET_PARAMETER.sub(lambda m: f"{m.group(1)}=[redacted]", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)


class SecretsRedactingFilter(logging.Filter):
    """Rewrites a record's message with :func:`secrets_redact` (the record is kept, only the values go)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = secrets_redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = secrets_redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = secrets_redact(record.exc_text)
        return True
