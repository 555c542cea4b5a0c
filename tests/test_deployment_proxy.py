"""The shipped Caddyfile in front of the `make run` gunicorn, as docker-compose sets them up, on loopback.

Debian's caddy runs the project's Caddyfile (adapted to JSON, with loopback ports, the upstream at this test's
gunicorn and Caddy's internal CA for ``localhost`` instead of a public one); gunicorn gets the environment
docker-compose gives it. Then a client checks what the internet would see: HTTPS with HSTS, Secure cookies,
HTTP redirected, and the sign-in throttle counting the client's address, not the proxy's nor a forged one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import warnings

import pytest
import requests
import urllib3
import yaml
from axes.models import AccessAttempt
from django.conf import settings

from sandbox.dovecot import free_ports
from tests.fixtures.web import gunicorn_start, wait_until_listening

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = settings.BASE_DIR
PASSWORD = "alice-password-1"


def _caddy_config(*, caddy: str, https_port: int, http_port: int, upstream: str, storage: str) -> dict:
    env = {**os.environ, "MAILHUB_DOMAIN": "localhost", "HOME": storage, "XDG_DATA_HOME": storage}
    adapted = subprocess.run([caddy, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"],  # noqa: S603
                             env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    text = adapted.stdout.replace('"web:8000"', json.dumps(upstream))
    config = json.loads(text)
    http = config["apps"]["http"]
    http["http_port"], http["https_port"] = http_port, https_port
    for server in http["servers"].values():
        server["listen"] = [f"127.0.0.1:{https_port}"]
    config["admin"] = {"disabled": True}
    config["storage"] = {"module": "file_system", "root": storage}
    config.setdefault("apps", {})["pki"] = {"certificate_authorities": {"local": {"install_trust": False}}}
    return config


@pytest.fixture
def behind_caddy(tmp_path, alice, settings):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Debian's caddy is not installed (make test installs it as root: apt-get install caddy)")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # what the server knows
    alice.set_password(PASSWORD)
    alice.save()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    https_port, http_port = free_ports(2)
    env = {k: str(v) for k, v in compose["x-app"]["environment"].items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["SITE_ORIGIN"] = f"https://localhost:{https_port}"  # compose: https://${MAILHUB_DOMAIN}
    env["ALLOWED_HOSTS"] = "localhost"  # compose: ${MAILHUB_DOMAIN}
    assert env["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto" and env["MAILHUB_PROXY_COUNT"] == "1"
    with gunicorn_start(env=env, log_path=tmp_path / "web.log", var_dir=tmp_path / "var") as upstream:
        config = _caddy_config(caddy=caddy, https_port=https_port, http_port=http_port,
                               upstream=upstream.removeprefix("http://"), storage=str(tmp_path / "caddy"))  # fmt: skip
        (tmp_path / "caddy.json").write_text(json.dumps(config))
        with (tmp_path / "caddy.log").open("wb") as log:
            command = [caddy, "run", "--config", str(tmp_path / "caddy.json")]
            caddy_env = {**os.environ, "HOME": str(tmp_path)}
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=caddy_env)  # noqa: S603
            try:
                wait_until_listening(https_port, process)
                yield {"https": f"https://localhost:{https_port}", "http": f"http://localhost:{http_port}",
                       "upstream": upstream}  # fmt: skip
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = False  # Caddy's internal CA for localhost (a public domain gets a public certificate)
    return session


def test_caddy_serves_https_with_hsts_secure_cookies_and_the_client_address(behind_caddy):
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    https = behind_caddy["https"]
    session = _session()
    page = session.get(f"{https}/login/", timeout=30)
    assert page.status_code == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    csrf_cookie = next(c for c in session.cookies if c.name == "csrftoken")
    assert csrf_cookie.secure

    token = csrf_cookie.value
    form = {"csrfmiddlewaretoken": token, "username": "alice", "password": PASSWORD}
    signed_in = session.post(f"{https}/login/", data=form, headers={"Referer": f"{https}/login/"},
                             allow_redirects=False, timeout=30)  # fmt: skip
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/"
    session_cookie = next(c for c in session.cookies if c.name == "sessionid")
    assert session_cookie.secure and session_cookie.has_nonstandard_attr("HttpOnly")
    assert session.get(f"{https}/accounts/", timeout=30).status_code == 200

    # Plain HTTP: Caddy redirects to HTTPS; gunicorn reached without the proxy's header redirects as well.
    redirect = _session().get(f"{behind_caddy['http']}/login/", allow_redirects=False, timeout=30)
    assert redirect.status_code in {301, 308} and redirect.headers["Location"].startswith("https://localhost")
    direct = _session().get(f"{behind_caddy['upstream']}/login/", headers={"Host": "localhost"},
                            allow_redirects=False, timeout=30)  # fmt: skip
    assert direct.status_code == 301 and direct.headers["Location"] == "https://localhost/login/"

    # The throttle counts the address Caddy saw (127.0.0.1), not one the client wrote into X-Forwarded-For.
    attacker = _session()
    attacker.get(f"{https}/login/", timeout=30)
    for n in range(settings.AXES_FAILURE_LIMIT):
        attacker.post(f"{https}/login/", timeout=30, headers={"Referer": f"{https}/login/",
                      "X-Forwarded-For": f"203.0.113.{n}"}, data={"csrfmiddlewaretoken": attacker.cookies["csrftoken"],
                      "username": f"guess{n}", "password": "x"})  # fmt: skip
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}
    locked = attacker.post(f"{https}/login/", timeout=30, headers={"Referer": f"{https}/login/"},
                           data={"csrfmiddlewaretoken": attacker.cookies["csrftoken"], "username": "alice",
                                 "password": PASSWORD})  # fmt: skip
    assert locked.status_code == 429 and "Try again in 15 minutes." in locked.text
