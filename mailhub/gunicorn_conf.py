"""gunicorn settings shared by `make run` (mailhub/run.py) and docker-compose (`-c python:mailhub.gunicorn_conf`).

The access log leaves out the query string and the Referer: the OAuth callback carries the authorisation
code and state in its query, a provider's consent page (the Referer of that callback) carries the state, and
search queries are private. Method, path, status, size, duration and user agent are kept.
"""

import os

from gunicorn.glogging import Logger

from mailhub.log_redaction import SecretsRedactingFilter

accesslog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
threads = 4
# The reverse proxy's address when one is in front (docker-compose sets it); X-Forwarded-* from others is ignored.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


class RedactingLogger(Logger):
    """gunicorn's logger, with secrets blanked in its error log too (e.g. "Error handling request /x?code=…")."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(SecretsRedactingFilter())


logger_class = RedactingLogger
