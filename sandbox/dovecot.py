"""A real Dovecot (Debian's 2.3) standing in for Outlook's IMAP and SMTP submission, on loopback.

:class:`DovecotServer` writes a config into a temporary folder and runs ``dovecot -F`` from it:

- IMAP (plain, STARTTLS offered) and IMAPS on ephemeral ports, with a certificate from ``sandbox.tls``
  (pass the sandbox's, so one CA bundle serves everything), CONDSTORE/QRESYNC/MOVE/UIDPLUS/SPECIAL-USE,
  Outlook's folder names (``Sent Items``, ``Deleted Items``, ``Junk Email``, ``Drafts``, ``Archive``);
- XOAUTH2/OAUTHBEARER checked by ``passdb oauth2`` against an RFC 7662 introspection endpoint
  (the sandbox's Microsoft one), so a revoked or expired token is refused by the server itself;
- Microsoft accounts without a mailbox refused at login although their token is valid
  (a ``deny = yes`` passwd-file, see :meth:`DovecotServer.deny_mailbox`);
- passwords for the generic IMAP/SMTP provider (and the django-mailbox benchmark): a passwd-file passdb
  next to the oauth2 one, for LOGIN and PLAIN in IMAP and submission (see :meth:`DovecotServer.set_password`);
  an address has one mailbox whichever way it logs in;
- a submission service (``dovecot-submissiond``, STARTTLS offered, and TLS from the first byte on
  ``submissions_port``) authenticating with XOAUTH2 or a password and relaying to an :class:`SmtpSink`, so a
  test sees exactly what was sent.

:attr:`DovecotServer.proxy` forwards to IMAPS and can cut a connection mid-response.

Exchange Online quirks Dovecot cannot imitate (``535 5.7.139`` when SMTP AUTH is disabled for a
mailbox, 30 messages a minute per mailbox) live in :class:`ExchangeSubmission`, a small aiosmtpd
stand-in that checks tokens against the same introspection endpoint and relays into the same sink.

The harness itself reaches the mailboxes as a Dovecot master user (``user*harness``), so seeding
(APPEND with dates and flags), expunges and flag changes come from "another client" over IMAP.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path

from imapclient import IMAPClient

from sandbox.tls import TlsFiles, tls_files_create

MAIL_USER = "mailhub-mail"  # Dovecot refuses to run mail processes as root
MASTER_USER = "harness"
OUTLOOK_FOLDERS = {
    "Drafts": r"\Drafts",
    "Sent Items": r"\Sent",
    "Deleted Items": r"\Trash",
    "Junk Email": r"\Junk",
    "Archive": r"\Archive",
}


PORT_ATTEMPTS = 3
PORT_NAMES = ("imap_port", "imaps_port", "submission_port", "submissions_port")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are picked, so the kernel
    cannot hand the same port out twice (which Dovecot refuses as a "duplicate listener")."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


# --- SMTP sink -------------------------------------------------------------------------------------


@dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float = field(default_factory=time.time)

    def message(self):  # -> email.message.EmailMessage
        from email import policy
        from email.parser import BytesParser

        return BytesParser(policy=policy.default).parsebytes(self.data)


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook name
        self.sink.record(SinkMessage(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 Ok: queued"


class SmtpSink:
    """An aiosmtpd server that keeps every message it receives (the "internet" beyond the relay)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[SinkMessage] = []
        self._cond = threading.Condition()
        self.port = free_port()
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)

    def record(self, message: SinkMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, *, timeout: float = 10) -> list[SinkMessage]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout=timeout):
                raise TimeoutError(f"the sink received {len(self.messages)} messages, expected {count}")
            return list(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


# --- a TCP proxy that can cut connections -----------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; :meth:`cut_after` drops a connection mid-stream."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut_after: int | None = None
        self.cuts = 0
        self.connections = 0
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy:{self.port}").start()

    def cut_after(self, server_bytes: int) -> None:
        """Drop the next connection that has received ``server_bytes`` from the server (one shot)."""
        with self._lock:
            self._cut_after = server_bytes

    def reset(self) -> None:
        with self._lock:
            self._cut_after = None
            self.cuts = 0

    def drop_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        self.drop_all()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets |= {client, upstream}
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, from_server: bool) -> None:
        seen = 0
        try:
            while chunk := source.recv(65536):
                if from_server:
                    seen += len(chunk)
                    with self._lock:
                        limit = self._cut_after
                        if limit is not None and seen >= limit:
                            self._cut_after = None
                            self.cuts += 1
                            dest.sendall(chunk[: max(0, len(chunk) - (seen - limit))])
                            raise OSError("cut")
                dest.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, dest}


# --- Dovecot -------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the process that started it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _binary(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin") or name


def _ensure_mail_user() -> tuple[str, int, int]:
    """The unprivileged user Dovecot runs mail processes as (created when running as root)."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return entry.pw_name, entry.pw_uid, entry.pw_gid
    try:
        entry = pwd.getpwnam(MAIL_USER)
    except KeyError:
        subprocess.run(  # noqa: S603
            ["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_USER],
            check=False,
            capture_output=True,
        )
        try:
            entry = pwd.getpwnam(MAIL_USER)
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


class DovecotServer:
    """Dovecot + SMTP sink on loopback, configured like Outlook closely enough for Mailhub's client.

    ``introspection_url``: where ``passdb oauth2`` POSTs ``token=...`` (RFC 7662 style, answering
    ``{"active": true, "email": ..., "mailbox": "yes"}``; set ``mailbox_attribute=None`` for an endpoint
    without the ``mailbox`` field and use :meth:`deny_mailbox` instead).
    """

    def __init__(
        self,
        *,
        introspection_url: str,
        root: Path | None = None,
        debug: bool = False,
        mailbox_attribute: str | None = "mailbox",
        tls: TlsFiles | None = None,
        imap_port: int = 0,
        imaps_port: int = 0,
        submission_port: int = 0,
        imap_capability: str = "",
        max_connections: int = 0,
    ) -> None:
        self.introspection_url = introspection_url
        # Above Dovecot's defaults (100 processes a service): many held connections at once, for a benchmark.
        self.max_connections = max_connections
        self._tls = tls  # the sandbox's CA and certificate, so one CA bundle serves msal, IMAP and SMTP
        # The sandbox's introspection says ``"mailbox": "yes"|"no"``: Dovecot treats "no" as an inactive
        # token, so an account without a mailbox is refused at once (no passwd-file reload delay).
        self.mailbox_attribute = mailbox_attribute
        self.debug = debug
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="mailhub-dovecot-"))
        self.imap_port = imap_port
        self.imaps_port = imaps_port
        self.submission_port = submission_port
        self.submissions_port = 0  # submission over TLS from the first byte (port 465's way)
        # Ports picked here (not given): another process may take one between picking and Dovecot's bind.
        self._picked_ports = [name for name in PORT_NAMES if not getattr(self, name)]
        self._pick_ports()
        # A full post-login CAPABILITY list overrides Dovecot's (e.g. one without CONDSTORE, QRESYNC and
        # MOVE, to exercise a client's fallbacks); "" keeps Dovecot's own.
        self.imap_capability = imap_capability
        self.master_password = secrets.token_urlsafe(16)
        self.sink = SmtpSink()
        self.proxy: TcpProxy | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._denied: set[str] = set()
        self._passwords: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def ca_path(self) -> Path:
        return Path(self.tls.ca_path)

    @property
    def tls(self) -> TlsFiles:
        if self._tls is None:
            self._tls = tls_files_create(folder=self.root / "tls")
        return self._tls

    def start(self) -> DovecotServer:
        self.root.chmod(0o755)  # login and mail processes run unprivileged and must traverse it
        shutil.rmtree(self.root / "run", ignore_errors=True)  # a kept root's sockets and pid of a killed run
        self.sink.start()
        self.mail_user, uid, gid = _ensure_mail_user()
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, uid, gid)
        self.tls  # noqa: B018 - create the certificate now if none was given
        for name in ("denied-users", "passwords", "master-users"):
            (self.root / name).touch()
        (self.root / "master-users").write_text(f"{MASTER_USER}:{{PLAIN}}{self.master_password}\n")
        (self.root / "oauth2.conf.ext").write_text(self._oauth2_config())
        for attempt in range(PORT_ATTEMPTS):
            self.config_path.write_text(self._config(uid=uid, gid=gid))
            self._process = subprocess.Popen(  # noqa: S603
                [_binary("dovecot"), "-F", "-c", str(self.config_path)],
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / "dovecot.stderr", "wb"),  # noqa: SIM115
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - a killed test run must not leave Dovecot behind
            )
            try:
                self._wait_listening()
                break
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                    raise
                self._pick_ports()  # taken meanwhile by another process: pick again
        self.proxy = TcpProxy(self.imaps_port)  # IMAPS, as clients reach Outlook
        return self

    def env(self) -> dict[str, str]:
        """Settings/environment variables that point the app's Outlook client at this server (with the
        sandbox's ``env()``, whose MICROSOFT_CA_BUNDLE trusts this certificate when ``tls=sandbox.tls``)."""
        return {
            "MICROSOFT_IMAP_HOST": "127.0.0.1",
            "MICROSOFT_IMAP_PORT": str(self.imaps_port),
            "MICROSOFT_IMAP_SECURITY": "ssl",
            "MICROSOFT_SMTP_HOST": "127.0.0.1",
            "MICROSOFT_SMTP_PORT": str(self.submission_port),
            "MICROSOFT_SMTP_SECURITY": "starttls",
            # Unlike Exchange, Dovecot's submission does not file sent mail in Sent: the client must.
            "MICROSOFT_APPEND_SENT": "true",
        }

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self.sink.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pick_ports(self) -> None:
        given = {getattr(self, name) for name in PORT_NAMES if name not in self._picked_ports}
        ports = [port for port in free_ports(len(self._picked_ports) + len(given)) if port not in given]
        for name, port in zip(self._picked_ports, ports, strict=False):
            setattr(self, name, port)

    def _wait_listening(self) -> None:
        deadline = time.time() + 15
        while time.time() < deadline:
            if self._process and self._process.poll() is not None:
                raise RuntimeError("dovecot exited: " + (self.root / "dovecot.stderr").read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        with socket.create_connection(("127.0.0.1", self.submission_port), timeout=1):
                            return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dovecot did not start listening")

    def _config(self, *, uid: int, gid: int) -> str:
        root = self.root
        internal = self.mail_user if os.geteuid() != 0 else "dovecot"
        login = self.mail_user if os.geteuid() != 0 else "dovenull"
        mailboxes = "\n".join(
            f'  mailbox "{name}" {{\n    auto = subscribe\n    special_use = {use}\n  }}'
            for name, use in OUTLOOK_FOLDERS.items()
        )
        debug = "yes" if self.debug else "no"
        return f"""# generated by sandbox/dovecot.py
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
instance_name = mailhub-{self.imap_port}
protocols = imap submission
listen = 127.0.0.1
hostname = outlook.sandbox.test
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
ssl = yes
ssl_cert = <{self.tls.cert_path}
ssl_key = <{self.tls.key_path}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = xoauth2 oauthbearer plain login
auth_master_user_separator = *
auth_debug = {debug}
auth_verbose = {debug}
auth_cache_size = 0
auth_failure_delay = 0
mail_debug = {debug}
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 0
{self._limits_config()}
mail_fsync = never
maildir_very_dirty_syncs = yes
login_greeting = Mailhub sandbox Outlook ready.
submission_relay_host = 127.0.0.1
submission_relay_port = {self.sink.port}
submission_relay_trusted = no
submission_relay_ssl = no

passdb {{
  driver = passwd-file
  args = {root}/denied-users
  deny = yes
}}
passdb {{
  driver = passwd-file
  args = {root}/master-users
  master = yes
  mechanisms = plain login
}}
passdb {{
  driver = passwd-file
  args = {root}/passwords
  mechanisms = plain login
}}
passdb {{
  driver = oauth2
  args = {root}/oauth2.conf.ext
  mechanisms = xoauth2 oauthbearer
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%Lu allow_all_users=yes
}}

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}

protocol imap {{
  mail_max_userip_connections = 500
{f"  imap_capability = {self.imap_capability}" if self.imap_capability else ""}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
  process_min_avail = 1
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {self.submission_port}
  }}
  inet_listener submissions {{
    address = 127.0.0.1
    port = {self.submissions_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # Dovecot's documented way to turn off the growing per-IP delay after failed logins: tests provoke
  # refusals on purpose, all from 127.0.0.1.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _limits_config(self) -> str:
        if not self.max_connections:
            return ""
        # IDLE learns of new mail through inotify, one instance a process; past the kernel's per-user limit
        # (fs.inotify.max_user_instances, often 128) Dovecot checks every mailbox_idle_check_interval instead.
        return (
            f"default_process_limit = {self.max_connections + 100}\n"
            f"default_client_limit = {2 * self.max_connections + 200}\n"
            "default_vsz_limit = 512M\n"
            "mailbox_idle_check_interval = 1 secs"
        )

    def _oauth2_config(self) -> str:
        return f"""introspection_mode = post
introspection_url = {self.introspection_url}
force_introspection = yes
username_attribute = email
active_attribute = {self.mailbox_attribute or "active"}
active_value = {"yes" if self.mailbox_attribute else "true"}
timeout_msecs = 5000
debug = {"yes" if self.debug else "no"}
"""

    # -- accounts ---------------------------------------------------------------------------------

    def deny_mailbox(self, email: str) -> None:
        """Refuse ``email`` at login even with a valid token, like a Microsoft account without Outlook."""
        self._denied.add(email.lower())
        self._write_lines("denied-users", (f"{user}:" for user in sorted(self._denied)))

    def set_password(self, email: str, password: str) -> None:
        """Allow LOGIN / AUTH PLAIN for ``email`` with ``password`` (IMAP and submission); a second call changes it,
        as a user changing their password at their mail provider does (the generic IMAP/SMTP provider's tests)."""
        self._passwords[email.lower()] = password
        self._write_lines("passwords", (f"{u}:{{PLAIN}}{p}" for u, p in sorted(self._passwords.items())))

    def _write_lines(self, name: str, lines: Iterable[str]) -> None:
        tmp = self.root / f".{name}.tmp"
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(self.root / name)
        # Dovecot stats a passwd-file at most once a second: let that second pass so the change counts.
        time.sleep(1.05)

    # -- "another client" ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def client(self, email: str, *, folder: str | None = None) -> Iterator[IMAPClient]:
        """An IMAP session as ``email`` through the master user (not XOAUTH2: this is the harness)."""
        imap = IMAPClient("127.0.0.1", port=self.imap_port, ssl=False, timeout=30)
        try:
            imap.login(f"{email.lower()}*{MASTER_USER}", self.master_password)
            if folder:
                imap.select_folder(folder)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def append(
        self,
        email: str,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: Iterable[str | bytes] = (),
        date: dt.datetime | None = None,
    ) -> int:
        """APPEND one message; return its UID."""
        return self.append_many(email, [(raw, tuple(flags), date)], folder=folder)[0]

    def append_many(
        self,
        email: str,
        messages: Iterable[tuple[bytes, Iterable[str | bytes], dt.datetime | None]],
        *,
        folder: str = "INBOX",
        batch: int = 200,
    ) -> list[int]:
        """APPEND many messages (MULTIAPPEND, ``batch`` per command, streamed); return their UIDs in order."""
        uids: list[int] = []
        with self.client(email) as imap:
            if folder != "INBOX" and not imap.folder_exists(folder):
                imap.create_folder(folder)
            pending: list[dict] = []
            for raw, flags, date in messages:
                item: dict[str, object] = {"msg": raw, "flags": tuple(flags)}
                if date is not None:
                    item["date"] = date
                pending.append(item)
                if len(pending) >= batch:
                    uids += _appenduids(imap.multiappend(folder, pending))
                    pending = []
            if pending:
                uids += _appenduids(imap.multiappend(folder, pending))
        return uids

    def seed(
        self,
        email: str,
        n: int,
        *,
        folder: str = "INBOX",
        seed: int = 0,
        start: dt.datetime | None = None,
    ) -> list[int]:
        """APPEND ``n`` messages from ``sandbox.corpus.generate_messages`` (INTERNALDATE = their Date;
        every third one \\Seen, every fifth \\Flagged); returns their UIDs."""
        from email.utils import parsedate_to_datetime

        from sandbox.corpus import generate_messages

        def items():
            for index, raw in enumerate(generate_messages(n, to_address=email, seed=seed, start=start)):
                head = raw.split(b"\r\n\r\n", 1)[0]
                date_line = next((line for line in head.split(b"\r\n") if line.lower().startswith(b"date:")), b"")
                date = parsedate_to_datetime(date_line[5:].decode("latin-1").strip()) if date_line else None
                flags = [b"\\Seen"] * (index % 3 == 0) + [b"\\Flagged"] * (index % 5 == 0)
                yield raw, flags, date

        return self.append_many(email, items(), folder=folder, batch=500)

    def seed_awkward(self, email: str, *, folder: str = "INBOX") -> dict[str, int]:
        """APPEND the hand-written awkward-MIME corpus; returns {file name: UID}."""
        from sandbox.corpus import awkward_corpus

        corpus = awkward_corpus()
        uids = self.append_many(email, [(raw, (), None) for _, raw in corpus], folder=folder)
        return {name: uid for (name, _), uid in zip(corpus, uids, strict=True)}

    def set_flags(self, email: str, folder: str, uids: list[int], flags: list[str], *, add: bool = True) -> None:
        with self.client(email, folder=folder) as imap:
            (imap.add_flags if add else imap.remove_flags)(uids, flags, silent=True)

    def expunge(self, email: str, folder: str, uids: list[int]) -> None:
        with self.client(email, folder=folder) as imap:
            imap.add_flags(uids, [b"\\Deleted"], silent=True)
            imap.uid_expunge(uids)

    def uids(self, email: str, folder: str = "INBOX") -> list[int]:
        with self.client(email) as imap:
            imap.select_folder(folder, readonly=True)
            return sorted(imap.search("ALL"))

    def snapshot(self, email: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """UID -> flags for every message in ``folder`` (to compare a database against)."""
        with self.client(email) as imap:
            imap.select_folder(folder, readonly=True)
            fetched = imap.fetch(imap.search("ALL"), ["FLAGS"])
            return {uid: tuple(sorted(data[b"FLAGS"])) for uid, data in fetched.items()}

    def uidvalidity(self, email: str, folder: str = "INBOX") -> int:
        with self.client(email) as imap:
            return imap.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]

    def renumber(self, email: str, folder: str = "INBOX") -> int:
        """Give ``folder`` a new UIDVALIDITY and new UIDs (as a server rebuilding its index does).

        Messages are re-appended one by one, so the harness never holds the whole folder in memory.
        Returns the new UIDVALIDITY.
        """
        old = self.uidvalidity(email, folder)
        with self.client(email, folder=folder) as imap:
            for uid in sorted(imap.search("ALL")):
                data = imap.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
                flags = [f for f in data[b"FLAGS"] if f != b"\\Recent"]
                imap.append(folder, data[b"BODY[]"], flags=flags, msg_time=data[b"INTERNALDATE"])
                imap.add_flags([uid], [b"\\Deleted"], silent=True)
                imap.uid_expunge([uid])
        self.doveadm("mailbox", "update", "-u", email.lower(), "--uid-validity", str(old + 1000), folder)
        return old + 1000

    def kick(self, email: str) -> None:
        """Drop every IMAP connection of ``email`` (a server restart, as the client sees it)."""
        self.doveadm("kick", email.lower())
        if self.proxy:
            self.proxy.drop_all()

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(  # noqa: S603
            [_binary("doveadm"), "-c", str(self.config_path), *args], capture_output=True, text=True, check=False
        )
        if result.returncode not in (0, 68):  # 68: "kick" found nobody to kick
            raise RuntimeError(f"doveadm {' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
        return result.stdout

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _appenduid(response: bytes) -> int:
    return _appenduids(response)[0]


def _appenduids(response: bytes) -> list[int]:
    # b"[APPENDUID 1700000000 42] Append completed." or, after MULTIAPPEND, "... 42:241]"
    text = response.decode() if isinstance(response, bytes) else str(response)
    uid_set = text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1]
    uids: list[int] = []
    for part in uid_set.split(","):
        first, _, last = part.partition(":")
        uids += range(int(first), int(last or first) + 1)
    return uids


# --- Exchange's SMTP quirks ------------------------------------------------------------------------


SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. "
    "Visit https://aka.ms/smtp_auth_disabled for more information."
)
SUBMISSION_QUOTA = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"


def introspect(url: str, token: str) -> str | None:
    """The email an RFC 7662 endpoint reports for an active ``token``, else None."""
    body = urllib.parse.urlencode({"token": token}).encode()
    try:
        with urllib.request.urlopen(url, data=body, timeout=5) as response:  # noqa: S310 - loopback http
            data = json.loads(response.read())
    except OSError:
        return None
    return data.get("email") if data.get("active") else None


class ExchangeSubmission:
    """An aiosmtpd submission server with Exchange Online's refusals, relaying into ``sink``.

    - mailboxes in :attr:`smtp_auth_disabled` get ``535 5.7.139`` on AUTH XOAUTH2;
    - more than ``rate_limit`` messages per ``rate_window`` seconds from one mailbox get
      ``554 5.2.0 ...SubmissionQuotaExceededException`` (Exchange: 30 a minute).
    """

    def __init__(
        self,
        *,
        introspection_url: str,
        sink: SmtpSink,
        rate_limit: int = 30,
        rate_window: float = 60.0,
        sent_items: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.introspection_url = introspection_url
        self.sink = sink
        # Like Exchange, file every accepted message in the sender's Sent Items (``sent_items(user, bytes)``).
        self.sent_items = sent_items
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.smtp_auth_disabled: set[str] = set()
        self.refused: list[str] = []
        self._sent: dict[str, list[float]] = {}
        self.port = free_port()
        self._controller = self._make_controller()

    def _make_controller(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult

        front = self

        class _Handler:
            async def handle_MAIL(self, server, session, envelope, address, options) -> str:  # noqa: N802
                user = session.auth_data if isinstance(session.auth_data, str) else ""
                now = time.time()
                recent = [t for t in front._sent.get(user, []) if t > now - front.rate_window]
                front._sent[user] = recent
                if len(recent) >= front.rate_limit:
                    front.refused.append(user)
                    return SUBMISSION_QUOTA
                envelope.mail_from = address
                return "250 2.1.0 Sender OK"

            async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802
                front._sent.setdefault(session.auth_data, []).append(time.time())
                content = bytes(envelope.content)
                front.sink.record(SinkMessage(envelope.mail_from, list(envelope.rcpt_tos), content))
                if front.sent_items is not None:  # Exchange's copy has headers of its own: other bytes
                    copy = b"X-MS-Exchange-Organization-AuthAs: Internal\r\n" + content
                    await server.loop.run_in_executor(None, front.sent_items, session.auth_data, copy)
                return "250 2.6.0 Queued mail for delivery"

        class _Exchange(SMTP):
            async def auth_XOAUTH2(self, server, args):  # noqa: N802 - aiosmtpd's AUTH hook naming
                if len(args) > 1:
                    blob = args[1]
                else:
                    blob = await self.challenge_auth("", encode_to_b64=False)
                    if blob is None:
                        return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode")
                try:
                    text = base64.b64decode(blob).decode()
                    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
                    user, token = fields["user"].lower(), fields["auth"].removeprefix("Bearer ")
                except (ValueError, KeyError):
                    return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode")
                email = await self.loop.run_in_executor(None, introspect, front.introspection_url, token)
                if not email or parseaddr(email)[1].lower() != user:
                    return AuthResult(success=False, handled=False, message="535 5.7.3 Authentication unsuccessful")
                if user in front.smtp_auth_disabled:
                    return AuthResult(success=False, handled=False, message=SMTP_AUTH_DISABLED)
                return AuthResult(success=True, auth_data=user)

        class _Controller(Controller):
            def factory(self):
                return _Exchange(
                    self.handler,
                    auth_require_tls=False,
                    auth_exclude_mechanism=["LOGIN", "PLAIN"],
                    hostname="smtp.sandbox.test",
                )

        return _Controller(_Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> ExchangeSubmission:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
