"""Mailhub settings, read from the environment (django-environ) with embedded defaults.

Without configuration Mailhub runs on SQLite and a filesystem Celery broker under ``var/``;
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

from pathlib import Path

import environ

from mailhub.local_secrets import new_django_secret, new_fernet_key, read_or_create

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")
VAR_DIR = Path(env("MAILHUB_VAR_DIR", default=str(BASE_DIR / "var")))

# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default=None) or read_or_create(VAR_DIR / "secret_key", new_django_secret)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The public origin used for the OAuth redirect URI when a request is not at hand (e.g. behind a proxy).
SITE_ORIGIN = env("SITE_ORIGIN", default="")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "providers",
    "accounts",
    "mailbox",
    "sandbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
    # WAL lets the web app read while the worker writes; the timeout rides out short write locks.
    # IMMEDIATE: a transaction takes the write lock when it begins. SQLite has no SELECT ... FOR UPDATE,
    # so without it two workers refreshing one token both read the old row, both refreshed, and the
    # loser (holding a stale snapshot) failed with "database is locked" or, on Microsoft, presented a
    # refresh token the winner had just rotated and marked the mailbox "reconnect required".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static, storage --------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
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
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "SAMEORIGIN"

# --- Secrets at rest --------------------------------------------------------------------------
# A comma-separated list of Fernet keys: the first encrypts, all decrypt, so keys can be rotated
# (`manage.py rotate_encryption_keys` re-encrypts every stored secret with the first key).
MAILHUB_ENCRYPTION_KEYS = env.list("MAILHUB_ENCRYPTION_KEYS", default=[]) or [
    read_or_create(VAR_DIR / "encryption_key", new_fernet_key)
]

# --- Celery -----------------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
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
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
MAILHUB_SYNC_INTERVAL_SECONDS = env.int("MAILHUB_SYNC_INTERVAL_SECONDS", default=60)
CELERY_BEAT_SCHEDULE = {
    "sync-all-accounts": {
        "task": "mailbox.tasks.sync_all_accounts",
        "schedule": float(MAILHUB_SYNC_INTERVAL_SECONDS),
    },
}

# --- Provider endpoints -----------------------------------------------------------------------
# Real Google and Microsoft by default; the sandbox (`manage.py sandbox`) prints overrides.
GOOGLE_AUTH_URI = env("GOOGLE_AUTH_URI", default="https://accounts.google.com/o/oauth2/auth")
GOOGLE_TOKEN_URI = env("GOOGLE_TOKEN_URI", default="https://oauth2.googleapis.com/token")
GOOGLE_REVOKE_URI = env("GOOGLE_REVOKE_URI", default="https://oauth2.googleapis.com/revoke")
GOOGLE_USERINFO_URI = env("GOOGLE_USERINFO_URI", default="https://openidconnect.googleapis.com/v1/userinfo")
GOOGLE_API_ROOT = env("GOOGLE_API_ROOT", default="https://gmail.googleapis.com/")

MICROSOFT_AUTHORITY_HOST = env("MICROSOFT_AUTHORITY_HOST", default="https://login.microsoftonline.com")
# A CA bundle for the Microsoft endpoints; empty means the system's trust store.
MICROSOFT_CA_BUNDLE = env("MICROSOFT_CA_BUNDLE", default="")
MICROSOFT_IMAP_HOST = env("MICROSOFT_IMAP_HOST", default="outlook.office365.com")
MICROSOFT_IMAP_PORT = env.int("MICROSOFT_IMAP_PORT", default=993)
MICROSOFT_IMAP_SECURITY = env("MICROSOFT_IMAP_SECURITY", default="ssl")  # ssl | starttls | none
MICROSOFT_SMTP_HOST = env("MICROSOFT_SMTP_HOST", default="smtp.office365.com")
MICROSOFT_SMTP_PORT = env.int("MICROSOFT_SMTP_PORT", default=587)
MICROSOFT_SMTP_SECURITY = env("MICROSOFT_SMTP_SECURITY", default="starttls")  # ssl | starttls | none
# Exchange Online files SMTP-sent mail in Sent Items itself; servers that don't need an APPEND.
MICROSOFT_APPEND_SENT = env.bool("MICROSOFT_APPEND_SENT", default=False)
# Exchange Online accepts 30 messages a minute per mailbox; sends are paced to stay under it.
MICROSOFT_SMTP_RATE_LIMIT = env.int("MICROSOFT_SMTP_RATE_LIMIT", default=30)
MICROSOFT_SMTP_RATE_WINDOW_SECONDS = env.float("MICROSOFT_SMTP_RATE_WINDOW_SECONDS", default=60.0)

# --- Logging ----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # These libraries log request headers and token responses at DEBUG: never let them, even with
    # LOG_LEVEL=DEBUG, since tokens and client secrets must not reach a log.
    "loggers": {
        name: {"level": "WARNING"}
        for name in ("requests_oauthlib", "oauthlib", "urllib3", "google.auth", "google_auth_oauthlib",
                     "googleapiclient", "msal", "imapclient", "smtplib", "mail.log")
    },
}
