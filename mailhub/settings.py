"""Mailhub settings, read from the environment (django-environ) with embedded defaults.

Without configuration Mailhub runs on SQLite and a filesystem Celery broker under ``var/``;
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ

from mailhub import config
from mailhub.local_secrets import new_django_secret, new_fernet_key, private_dir, read_or_create, sqlite_file_prepare

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")
ENVIRON = os.environ
# Keys, the SQLite database, the broker queue and attachments live here: only this user may enter (0700).
VAR_DIR = private_dir(Path(env("MAILHUB_VAR_DIR", default=str(BASE_DIR / "var"))))

# --- Core -------------------------------------------------------------------------------------
DEBUG = config.env_bool(ENVIRON, "DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default=None) or read_or_create(VAR_DIR / "secret_key", new_django_secret)
# The public origin (e.g. https://mail.example.com): used for the OAuth redirect URI, and the one switch for
# HTTPS: an https origin turns on Secure cookies, HSTS and the redirect to https (see "HTTPS" below).
SITE_ORIGIN = config.env_origin(ENVIRON, "SITE_ORIGIN")
_SITE_HOST = urlsplit(SITE_ORIGIN).hostname if SITE_ORIGIN else None
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[_SITE_HOST] if _SITE_HOST else ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[SITE_ORIGIN] if SITE_ORIGIN else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "axes",
    "csp",
    "django_ratelimit",
    "django_prose_editor",
    "providers",
    "accounts",
    "mailbox",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "mailhub.middleware.NulBytesRefusedMiddleware",
    "mailhub.middleware.ContentSecurityPolicyMiddleware",  # django-csp's, plus the OAuth sign-in origins
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the "try again later" page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mailhub.urls"
WSGI_APPLICATION = "mailhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'mailhub.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
    sqlite_file_prepare(DATABASES["default"]["NAME"])
    # WAL lets the web app read while the worker writes; the timeout rides out short write locks. IMMEDIATE:
    # a transaction takes the write lock when it begins, waiting for it within the timeout. A deferred one
    # that read first and then wrote failed at once ("database is locked", no waiting) whenever another
    # connection had written in between (the web app, another worker, the sync's lock heartbeat); and SQLite
    # has no SELECT ... FOR UPDATE, so two workers refreshing one token both read the old row and both
    # refreshed (on Microsoft the loser presented a refresh token the winner had just rotated).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection kept between requests: opening one cost 5-17 ms per page and per poll (bench ui), a third of
    # a page's budget. No parallel workers: the mail pages read a few dozen rows along an index, where starting
    # a worker took 12 ms (60 ms on a busy host) of a query that ran in 1 ms.
    DATABASES["default"]["CONN_MAX_AGE"] = config.env_int(
        ENVIRON, "DATABASE_CONN_MAX_AGE", default=60, minimum=0, maximum=3600
    )
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c max_parallel_workers_per_gather=0")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static, storage --------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out user or address before the password check
    "django.contrib.auth.backends.ModelBackend",
]

# --- Sign-in throttling (django-axes) ------------------------------------------------------------
# After AXES_FAILURE_LIMIT wrong passwords for one user name, or from one address, sign-in is refused for
# AXES_COOLOFF_MINUTES with a "try again in N minutes" page (429). The two are counted separately, so an
# attacker spreading guesses over many addresses still locks the user name, and one address guessing many
# user names is locked too.
AXES_FAILURE_LIMIT = config.env_int(ENVIRON, "AXES_FAILURE_LIMIT", default=5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(
    minutes=config.env_int(ENVIRON, "AXES_COOLOFF_MINUTES", default=15, minimum=1, maximum=7 * 24 * 60)
)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_CALLABLE = "mailhub.views.sign_in_locked_out"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the page's "N minutes" stays true
AXES_ENABLE_ADMIN = True
# Behind N reverse proxies (docker-compose: Caddy, 1) the client's address is the N-th from the right in
# X-Forwarded-For; with 0, REMOTE_ADDR (a proxy would otherwise lock everyone out at once).
MAILHUB_PROXY_COUNT = config.env_int(ENVIRON, "MAILHUB_PROXY_COUNT", default=0, minimum=0, maximum=10)
AXES_CLIENT_IP_CALLABLE = "mailhub.client_ip.client_ip_address"

LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", "English"),
    ("zh-hans", "简体中文"),
    ("ru", "Русский"),
    ("sv", "Svenska"),
    ("pt-br", "Português (Brasil)"),
    ("es", "Español"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "mailhub" / "static"]
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(VAR_DIR / "media")))
FILE_UPLOAD_PERMISSIONS = 0o600  # attachments are mail: readable by this user only, wherever MEDIA_ROOT is
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
# No page may be framed; the message-body view alone allows its own origin (the thread page's iframe).
X_FRAME_OPTIONS = "DENY"

# --- HTTPS ---------------------------------------------------------------------------------------
# One switch: SITE_ORIGIN=https://... makes the cookies Secure and turns on HSTS and the redirect to https.
# Behind a reverse proxy that terminates TLS, also set SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto (the
# header the proxy sets to "https"; the proxy must overwrite it), or every request redirects to itself.
HTTPS = SITE_ORIGIN.startswith("https://")
SECURE_PROXY_SSL_HEADER = config.env_proxy_ssl_header(ENVIRON, "SECURE_PROXY_SSL_HEADER")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
_HSTS_SECONDS = config.env_int(
    ENVIRON, "SECURE_HSTS_SECONDS", default=365 * 24 * 3600, minimum=0, maximum=2 * 365 * 24 * 3600
)
SECURE_HSTS_SECONDS = _HSTS_SECONDS if HTTPS else 0
# Both default to on so `check --deploy` is clean; set them false when the parent domain serves other sites
# over plain http (then `check --deploy` names W005/W021, as it should).
SECURE_HSTS_INCLUDE_SUBDOMAINS = config.env_bool(ENVIRON, "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = config.env_bool(ENVIRON, "SECURE_HSTS_PRELOAD", default=True)

# --- Content-Security-Policy (django-csp) ---------------------------------------------------------
# Scripts and styles only from our own files (no inline script, no eval); nothing remote. The message-body
# view sets its own, stricter policy (see mailbox.sanitize.message_body_csp), which the middleware keeps.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],  # + Google's and Microsoft's sign-in origins (mailhub.middleware)
        "frame-ancestors": ["'none'"],
        "report-uri": "/csp-report/",  # logged as WARNING by mailhub.views.csp_report
    },
}

# --- Secrets at rest --------------------------------------------------------------------------
# A comma-separated list of Fernet keys: the first encrypts, all decrypt, so keys can be rotated
# (`manage.py rotate_encryption_keys` re-encrypts every stored secret with the first key).
MAILHUB_ENCRYPTION_KEYS = env.list("MAILHUB_ENCRYPTION_KEYS", default=[]) or [
    read_or_create(VAR_DIR / "encryption_key", new_fernet_key)
]

# --- Celery -----------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
# Rate limits (django-ratelimit) count in a cache every web process must share: Redis when there is one. The
# embedded default runs one web process (gunicorn's default), whose memory is that shared cache; run several
# (WEB_CONCURRENCY) only with REDIS_URL set.
# W001 only says django-ratelimit was not tested with Django's own Redis cache, whose incr is Redis' atomic INCRBY.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")  # one process: its memory is shared by all its threads
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {"visibility_timeout": 3600}
if CELERY_BROKER_URL.startswith("filesystem"):
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control in the working dir
        # The worker takes one message per poll once its prefetch is full: at kombu's default of 1 s a backlog
        # drains at one task a second per worker process. A listdir five times a second costs nothing.
        "polling_interval": 0.2,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = config.env_bool(ENVIRON, "CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# How often an open page asks whether what it shows changed (one cheap request; see mailbox.views.changes).
MAILHUB_LIVE_SECONDS = config.env_int(ENVIRON, "MAILHUB_LIVE_SECONDS", default=4, minimum=1, maximum=60)
MAILHUB_SYNC_INTERVAL_SECONDS = config.env_int(
    ENVIRON, "MAILHUB_SYNC_INTERVAL_SECONDS", default=60, minimum=1, maximum=24 * 3600
)
# A running sync renews its lock every quarter of this; a dead worker's lock is free after it.
MAILHUB_SYNC_LOCK_TTL_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_SYNC_LOCK_TTL_SECONDS", default=60.0, minimum=1, maximum=3600
)
# The outbox (mailbox/outbox.py): how long a worker holds a row it is sending, how long a message the provider
# accepted may take to show up where Mailhub looks for it, and how often beat re-dispatches what a dead
# worker or a lost task left behind (queued rows overdue by MAILHUB_OUTBOX_OVERDUE_SECONDS).
MAILHUB_SEND_LEASE_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_SEND_LEASE_SECONDS", default=300.0, minimum=1, maximum=24 * 3600
)
MAILHUB_SEND_SETTLE_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_SEND_SETTLE_SECONDS", default=30.0, minimum=0, maximum=3600
)
MAILHUB_OUTBOX_SWEEP_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_OUTBOX_SWEEP_SECONDS", default=30.0, minimum=0.5, maximum=3600
)
MAILHUB_OUTBOX_OVERDUE_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_OUTBOX_OVERDUE_SECONDS", default=60.0, minimum=1, maximum=24 * 3600
)
# Batches: messages a minute to an SMTP server (Outlook's limit is the default), and whether batches are paced
# at all (off only for benchmarks against the sandbox).
MAILHUB_BATCH_PER_MINUTE = config.env_seconds(
    ENVIRON, "MAILHUB_BATCH_PER_MINUTE", default=30.0, minimum=1, maximum=6000
)
MAILHUB_BATCH_PACING = config.env_bool(ENVIRON, "MAILHUB_BATCH_PACING", default=True)
# Watchers (mailbox/watch.py): accounts per watcher thread, how long a dead watcher's leases last, how often beat
# looks for unwatched mailboxes, and how often beat still syncs a watched mailbox (for folders besides INBOX).
# IMAP IDLE is re-issued every MAILHUB_IDLE_RENEW_SECONDS; a server without IDLE gets a NOOP every
# MAILHUB_IMAP_POLL_SECONDS; Gmail's history is asked every MAILHUB_GMAIL_POLL_SECONDS (2 quota units each).
MAILHUB_WATCH_CAPACITY = config.env_int(ENVIRON, "MAILHUB_WATCH_CAPACITY", default=500, minimum=1, maximum=10000)
MAILHUB_WATCH_LEASE_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_WATCH_LEASE_SECONDS", default=30.0, minimum=1, maximum=3600
)
MAILHUB_WATCH_RETRY_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_WATCH_RETRY_SECONDS", default=5.0, minimum=0.1, maximum=3600
)
MAILHUB_WATCH_ENSURE_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_WATCH_ENSURE_SECONDS", default=15.0, minimum=0.5, maximum=3600
)
MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_WATCHED_SYNC_INTERVAL_SECONDS", default=900.0, minimum=1, maximum=24 * 3600
)
MAILHUB_IDLE_RENEW_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_IDLE_RENEW_SECONDS", default=20 * 60.0, minimum=1, maximum=29 * 60
)
MAILHUB_IMAP_POLL_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_IMAP_POLL_SECONDS", default=30.0, minimum=1, maximum=3600
)
MAILHUB_GMAIL_POLL_SECONDS = config.env_seconds(
    ENVIRON, "MAILHUB_GMAIL_POLL_SECONDS", default=8.0, minimum=1, maximum=3600
)
CELERY_BEAT_SCHEDULE = {
    "sync-all-accounts": {
        "task": "mailbox.tasks.accounts_sync_due",
        "schedule": float(MAILHUB_SYNC_INTERVAL_SECONDS),
    },
    "sweep-outbox": {
        "task": "mailbox.tasks.outbox_sweep",
        "schedule": MAILHUB_OUTBOX_SWEEP_SECONDS,
    },
    "ensure-watchers": {
        "task": "mailbox.tasks.watchers_ensure",
        "schedule": MAILHUB_WATCH_ENSURE_SECONDS,
    },
}

# --- Provider endpoints -----------------------------------------------------------------------
# Real Google and Microsoft by default; the sandbox (`manage.py sandbox`) prints overrides.
# URLs must be https, except for a loopback host (the sandbox); anything else stops the process.
GOOGLE_AUTH_URI = config.env_url(ENVIRON, "GOOGLE_AUTH_URI", default="https://accounts.google.com/o/oauth2/auth")
GOOGLE_TOKEN_URI = config.env_url(ENVIRON, "GOOGLE_TOKEN_URI", default="https://oauth2.googleapis.com/token")
GOOGLE_REVOKE_URI = config.env_url(ENVIRON, "GOOGLE_REVOKE_URI", default="https://oauth2.googleapis.com/revoke")
GOOGLE_USERINFO_URI = config.env_url(
    ENVIRON, "GOOGLE_USERINFO_URI", default="https://openidconnect.googleapis.com/v1/userinfo"
)
GOOGLE_API_ROOT = config.env_url(ENVIRON, "GOOGLE_API_ROOT", default="https://gmail.googleapis.com/")

MICROSOFT_AUTHORITY_HOST = config.env_url(
    ENVIRON,
    "MICROSOFT_AUTHORITY_HOST",
    default="https://login.microsoftonline.com",
    https_only=True,  # msal's rule
)
# Where the browser is sent to sign in (the authority's discovery names the page); allowed by the CSP.
MICROSOFT_SIGN_IN_ORIGIN = config.env_url(ENVIRON, "MICROSOFT_SIGN_IN_ORIGIN", default=MICROSOFT_AUTHORITY_HOST)
# A CA bundle for the Microsoft endpoints; empty means the system's trust store.
MICROSOFT_CA_BUNDLE = env("MICROSOFT_CA_BUNDLE", default="")
MICROSOFT_IMAP_HOST = env("MICROSOFT_IMAP_HOST", default="outlook.office365.com")
MICROSOFT_IMAP_PORT = config.env_port(ENVIRON, "MICROSOFT_IMAP_PORT", default=993)
MICROSOFT_SMTP_HOST = env("MICROSOFT_SMTP_HOST", default="smtp.office365.com")
MICROSOFT_SMTP_PORT = config.env_port(ENVIRON, "MICROSOFT_SMTP_PORT", default=587)
# ssl | starttls | none. `none` (plain text: the token crosses the wire readable) is for a test server on this
# machine; for any other host it also needs INSECURE_ALLOW_PLAINTEXT_MAIL=true.
INSECURE_ALLOW_PLAINTEXT_MAIL = config.env_bool(ENVIRON, config.PLAINTEXT_OVERRIDE, default=False)
MICROSOFT_IMAP_SECURITY = config.mail_security(
    variable="MICROSOFT_IMAP_SECURITY",
    value=env("MICROSOFT_IMAP_SECURITY", default="ssl"),
    host=MICROSOFT_IMAP_HOST,
    allow_plaintext=INSECURE_ALLOW_PLAINTEXT_MAIL,
)
MICROSOFT_SMTP_SECURITY = config.mail_security(
    variable="MICROSOFT_SMTP_SECURITY",
    value=env("MICROSOFT_SMTP_SECURITY", default="starttls"),
    host=MICROSOFT_SMTP_HOST,
    allow_plaintext=INSECURE_ALLOW_PLAINTEXT_MAIL,
)
# Exchange Online files SMTP-sent mail in Sent Items itself; servers that don't need an APPEND.
MICROSOFT_APPEND_SENT = config.env_bool(ENVIRON, "MICROSOFT_APPEND_SENT", default=False)
# Exchange Online accepts 30 messages a minute per mailbox; sends are paced to stay under it.
MICROSOFT_SMTP_RATE_LIMIT = config.env_int(ENVIRON, "MICROSOFT_SMTP_RATE_LIMIT", default=30, minimum=1, maximum=10_000)
MICROSOFT_SMTP_RATE_WINDOW_SECONDS = env.float("MICROSOFT_SMTP_RATE_WINDOW_SECONDS", default=60.0)
# The generic IMAP/SMTP provider: a CA bundle its servers' certificates are checked against; empty means the
# system's trust store.
IMAP_CA_BUNDLE = env("IMAP_CA_BUNDLE", default="")
# Servers users type in must be on the internet (not this machine or a private network) unless an administrator
# names them in a preset; true lifts that for every server (a Mailhub used only inside one network).
IMAP_ALLOW_PRIVATE_SERVERS = config.env_bool(ENVIRON, "IMAP_ALLOW_PRIVATE_SERVERS", default=False)
# How often one user may have Mailhub sign in to servers they named (django-ratelimit).
MAILHUB_SERVER_CHECK_RATE = env("MAILHUB_SERVER_CHECK_RATE", default="10/10m")

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = config.env_choice(ENVIRON, "LOG_LEVEL", choices=config.LOG_LEVELS, default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line passes the redaction filter: no OAuth code, state, token or password reaches a log.
    "filters": {"secrets": {"()": "mailhub.log_redaction.SecretsRedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["secrets"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # These libraries log request headers and token responses at DEBUG: never let them, even with
    # LOG_LEVEL=DEBUG, since tokens and client secrets must not reach a log.
    "loggers": {
        name: {"level": "WARNING"}
        for name in (
            "requests_oauthlib",
            "oauthlib",
            "urllib3",
            "google.auth",
            "google_auth_oauthlib",
            "googleapiclient",
            "msal",
            "imapclient",
            "smtplib",
            "mail.log",
        )
    },
}
