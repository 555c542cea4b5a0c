"""Gmail quota pacing shared by every process of this installation (Celery workers, the web app).

The rule: a request's units count from when it is sent until one window after its answer arrived (Google
charged them somewhere in between, so a moving-window limiter on Google's side never trips). A request waits
until two moving windows both have room, checked and taken together, atomically:

- per user: at most ``GMAIL_QUOTA_UNITS_PER_SECOND`` (Google's 250) units in any 1-second window;
- per project (all users of the Google Cloud project): at most the administrator's "units per minute"
  (Google's default 1,200,000) in any 60-second window.

A request dearer than a whole limit waits for an empty window. A request still in flight counts at most
``GMAIL_QUOTA_INFLIGHT_SECONDS`` (60) after it was sent, so the units of a process that died mid-request are
freed. ``pause`` holds every request of the user, in every process, for a while (after a 429 with Retry-After).

Where the accounting lives: in Redis when ``REDIS_URL`` is set (one Lua script per step, so concurrent workers
never both take the last units; Redis's clock, so machines need not agree on the time); otherwise, on the
embedded default (one machine: SQLite and the filesystem broker), in a JSON state file under ``VAR_DIR``
guarded by an ``fcntl`` lock; there a process that died is seen at once (its pid is gone), so its units go
before the expiry. ``throttled``/``succeeded`` adapt this process's per-user limit only.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis
from django.conf import settings

QUOTA_UNITS_PER_SECOND = 250
QUOTA_WINDOW_SECONDS = 1.0
PROJECT_UNITS_PER_MINUTE = 1_200_000  # Google's default "Queries per minute" quota of a project
PROJECT_WINDOW_SECONDS = 60.0
INFLIGHT_SECONDS = 60.0
T = TypeVar("T")
MAX_SLEEP = 1.0  # waiters look again at least this often (a pause may have been lifted, a limit changed)


@dataclass(frozen=True)
class Rules:
    """The two windows one request is checked against."""

    user_limit: float
    project_limit: float
    user_window: float = QUOTA_WINDOW_SECONDS
    project_window: float = PROJECT_WINDOW_SECONDS
    inflight: float = INFLIGHT_SECONDS


@dataclass
class QuotaEntry:
    """One request's units, as counted in each window (a request dearer than a limit counts as the limit)."""

    key: str
    units: int
    user_units: int = 0
    project_units: int = 0
    counted: bool = False


def _capped(units: int, limit: float) -> int:
    return max(min(units, math.floor(limit)), 1)


class QuotaStore(Protocol):
    def take(self, *, user: str, entry: QuotaEntry, rules: Rules) -> float:
        """Count ``entry`` in both windows and return 0, or return the seconds to wait before asking again."""
        ...

    def finish(self, *, user: str, entry: QuotaEntry, rules: Rules) -> None:
        """The answer arrived: ``entry`` counts one more window from now, then frees its units."""
        ...

    def pause(self, *, user: str, seconds: float) -> None: ...


# --- Redis -----------------------------------------------------------------------------------------

# Times in microseconds of Redis's clock. A sorted set per window holds "key|units" scored by when the entry
# stops counting; a counter beside it holds the sum, so a check never adds up a minute of a whole project.
_DRAIN = """
local function used(zset, total_key, now)
  local total = tonumber(redis.call('GET', total_key) or '0')
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #gone > 0 then
    for _, member in ipairs(gone) do
      total = total - tonumber(string.match(member, '|(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  end
  if redis.call('ZCARD', zset) == 0 then
    total = 0
  end
  return total
end

-- Microseconds until enough units leave the window for ``units`` more, at most ``window`` (an entry in flight
-- is scored by its expiry, but once answered it leaves one window after that).
local function room_in(zset, limit, total, units, now, window)
  if total + units <= limit then
    return 0
  end
  local start = 0
  while true do
    local page = redis.call('ZRANGE', zset, start, start + 99, 'WITHSCORES')
    if #page == 0 then
      return window
    end
    for i = 1, #page, 2 do
      total = total - tonumber(string.match(page[i], '|(%d+)$'))
      if total + units <= limit then
        return math.min(tonumber(page[i + 1]) - now, window)
      end
    end
    start = start + 100
  end
end
"""

_TAKE = (
    _DRAIN
    + """
-- KEYS: user set, user total, user pause, project set, project total
-- ARGV: key, user units, project units, user limit, project limit, user window, project window, in flight,
--       keys' lifetime (ms); durations in microseconds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local user_units, project_units = tonumber(ARGV[2]), tonumber(ARGV[3])
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then
  return paused - now
end
local user_total = used(KEYS[1], KEYS[2], now)
local project_total = used(KEYS[4], KEYS[5], now)
local wait = math.max(
  room_in(KEYS[1], tonumber(ARGV[4]), user_total, user_units, now, tonumber(ARGV[6])),
  room_in(KEYS[4], tonumber(ARGV[5]), project_total, project_units, now, tonumber(ARGV[7])))
if wait > 0 then
  return wait
end
local expires = now + tonumber(ARGV[8])
redis.call('ZADD', KEYS[1], expires, ARGV[1] .. '|' .. user_units)
redis.call('ZADD', KEYS[4], expires, ARGV[1] .. '|' .. project_units)
redis.call('SET', KEYS[2], user_total + user_units, 'PX', ARGV[9])
redis.call('SET', KEYS[5], project_total + project_units, 'PX', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
redis.call('PEXPIRE', KEYS[4], ARGV[9])
return 0
"""
)

_FINISH = """
-- KEYS: user set, project set. ARGV: user member, project member, user window, project window (microseconds).
-- XX: an entry already dropped (in flight for too long) is not counted again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[2])
return 0
"""

_PAUSE = """
-- KEYS: user pause. ARGV: seconds (microseconds).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
if until_ > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_, 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
end
return 0
"""

_PREFIX = "mailhub:gmail-quota:"
_PROJECT_KEYS = [f"{_PREFIX}project", f"{_PREFIX}project:total"]


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _user_keys(user: str) -> list[str]:
    base = f"{_PREFIX}user:{user}"
    return [base, f"{base}:total", f"{base}:pause"]


class RedisQuotaStore:
    """The windows in Redis, shared by every process of every machine using it."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self._take = self.client.register_script(_TAKE)
        self._finish = self.client.register_script(_FINISH)
        self._pause = self.client.register_script(_PAUSE)

    def take(self, *, user: str, entry: QuotaEntry, rules: Rules) -> float:
        lifetime_ms = math.ceil((rules.inflight + rules.project_window + 60) * 1000)
        args: list[str | int | float] = [entry.key, entry.user_units, entry.project_units]
        args += [rules.user_limit, rules.project_limit, _us(rules.user_window), _us(rules.project_window)]
        args += [_us(rules.inflight), lifetime_ms]
        wait_us = int(self._take(keys=_user_keys(user) + _PROJECT_KEYS, args=args))
        return wait_us / 1_000_000

    def finish(self, *, user: str, entry: QuotaEntry, rules: Rules) -> None:
        args: list[str | int] = [f"{entry.key}|{entry.user_units}", f"{entry.key}|{entry.project_units}"]
        args += [_us(rules.user_window), _us(rules.project_window)]
        self._finish(keys=[_user_keys(user)[0], _PROJECT_KEYS[0]], args=args)

    def pause(self, *, user: str, seconds: float) -> None:
        self._pause(keys=[_user_keys(user)[2]], args=[_us(seconds)])


# --- State file ------------------------------------------------------------------------------------

STATE_FORMAT = 1
# key -> [units, counted until, the process waiting for the answer ("host:pid") or "" once it came]
Window = dict[str, list[Any]]


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead(holder: str) -> bool:
    """Whether the process waiting for an answer is gone. Only a process of this host (or container) can tell;
    a reused pid keeps the units until their expiry, no longer."""
    host, _, pid = holder.rpartition(":")
    if not holder or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def _drain(window: Window, now: float, *, horizon: float) -> None:
    """Drop what left the window, what lies past ``horizon`` (the clock went back) and what a dead process was
    waiting for."""
    for key in [k for k, (_, until, holder) in window.items() if not now < until <= horizon or _dead(holder)]:
        del window[key]


def _room_in(window: Window, *, limit: float, units: int, now: float, longest: float) -> float:
    """Seconds until enough units leave ``window`` for ``units`` more, at most ``longest`` (see the Lua twin)."""
    total = sum(entry[0] for entry in window.values())
    if total + units <= limit:
        return 0.0
    for left, until, _ in sorted(window.values(), key=lambda e: e[1]):
        total -= left
        if total + units <= limit:
            return min(until - now, longest)
    return longest


def _busy(user_state: dict[str, Any], now: float) -> bool:
    return user_state["paused_until"] > now or any(until > now for _, until, _ in user_state["window"].values())


class FileQuotaStore:
    """The windows in a JSON file, changed under an exclusive ``fcntl`` lock: every process of one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)

    def _change(self, change: Callable[[dict[str, Any], float], T]) -> T:
        with open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                now = time.time()
                result = change(state, now)
                self._write(state, now)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            state = {}
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:  # none yet, or another version's
            state = {"format": STATE_FORMAT, "users": {}, "project": {}}
        return state

    def _write(self, state: dict[str, Any], now: float) -> None:
        # Idle users go; a temporary file then a rename, so a process killed while writing leaves the old state.
        state["users"] = {user: mine for user, mine in state["users"].items() if _busy(mine, now)}
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".gmail-quota-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out, separators=(",", ":"))
        os.replace(temp, self.path)

    @staticmethod
    def _user(state: dict[str, Any], user: str) -> dict[str, Any]:
        return state["users"].setdefault(user, {"window": {}, "paused_until": 0.0})

    def take(self, *, user: str, entry: QuotaEntry, rules: Rules) -> float:
        def change(state: dict[str, Any], now: float) -> float:
            mine, project = self._user(state, user), state["project"]
            if mine["paused_until"] > now:
                return float(mine["paused_until"] - now)
            _drain(mine["window"], now, horizon=now + rules.inflight + rules.user_window)
            _drain(project, now, horizon=now + rules.inflight + rules.project_window)
            wait = max(
                _room_in(
                    mine["window"], limit=rules.user_limit, units=entry.user_units, now=now, longest=rules.user_window
                ),
                _room_in(
                    project, limit=rules.project_limit, units=entry.project_units, now=now, longest=rules.project_window
                ),
            )
            if wait > 0:
                return wait
            mine["window"][entry.key] = [entry.user_units, now + rules.inflight, _holder()]
            project[entry.key] = [entry.project_units, now + rules.inflight, _holder()]
            return 0.0

        return float(self._change(change))

    def finish(self, *, user: str, entry: QuotaEntry, rules: Rules) -> None:
        def change(state: dict[str, Any], now: float) -> None:
            mine = self._user(state, user)["window"].get(entry.key)
            if mine is not None:  # else dropped: in flight for too long
                mine[1:] = [now + rules.user_window, ""]
            counted = state["project"].get(entry.key)
            if counted is not None:
                counted[1:] = [now + rules.project_window, ""]

        self._change(change)

    def pause(self, *, user: str, seconds: float) -> None:
        def change(state: dict[str, Any], now: float) -> None:
            mine = self._user(state, user)
            mine["paused_until"] = max(mine["paused_until"], now + seconds)

        self._change(change)


# --- The pacer ---------------------------------------------------------------------------------------


class QuotaPacer:
    """One user's requests in this process, paced by the shared windows of ``store`` (see the module docstring).

    ``limit`` is this process's per-user limit: it adapts below ``configured`` when Google still throttles
    (someone else shares the quota) and creeps back. A ``limit`` of 0 turns pacing off.
    """

    def __init__(self, *, user: str, limit: float, project_limit: float, store: QuotaStore, inflight: float) -> None:
        self.user = user
        self.limit = limit
        self.configured = limit
        self.project_limit = project_limit
        self.store = store
        self.inflight = inflight
        self._lock = threading.Lock()
        self._last_cut = 0.0

    def signature(self) -> tuple[float, float, QuotaStore, float]:
        """What the pacer was made for: another configuration gets a new one."""
        return (self.configured, self.project_limit, self.store, self.inflight)

    def _rules(self) -> Rules:
        return Rules(user_limit=self.limit, project_limit=self.project_limit, inflight=self.inflight)

    def acquire(self, units: float) -> QuotaEntry:
        entry = QuotaEntry(key=uuid.uuid4().hex, units=math.ceil(units))
        if not self.configured:
            return entry
        while True:
            rules = self._rules()
            entry.user_units = _capped(entry.units, rules.user_limit)
            entry.project_units = _capped(entry.units, rules.project_limit)
            wait = self.store.take(user=self.user, entry=entry, rules=rules)
            if wait <= 0:
                entry.counted = True
                return entry
            # Jitter: the processes that waited for the same units do not all ask again at the same instant.
            time.sleep(min(wait, MAX_SLEEP) + random.uniform(0, 0.002))

    def release(self, entry: QuotaEntry) -> None:
        if entry.counted:
            self.store.finish(user=self.user, entry=entry, rules=self._rules())

    def pause(self, seconds: float) -> None:
        if self.configured and seconds > 0:
            self.store.pause(user=self.user, seconds=seconds)

    def throttled(self) -> None:
        """Google said 429 although we paced: someone else shares the quota. Slow down (multiplicatively)."""
        if self.configured:
            with self._lock:
                now = time.monotonic()
                if now - self._last_cut > QUOTA_WINDOW_SECONDS:  # one cut per window, however many 429s a burst drew
                    self._last_cut = now
                    self.limit = max(self.limit * 0.7, self.configured * 0.2)

    def succeeded(self) -> None:
        """Creep back towards the configured limit (additively)."""
        if self.configured and self.limit < self.configured:
            with self._lock:
                self.limit = min(self.limit + self.configured * 0.02, self.configured)


_stores: dict[str, QuotaStore] = {}
_pacers: dict[str, QuotaPacer] = {}
_lock = threading.Lock()


def state_file() -> Path:
    return Path(getattr(settings, "GMAIL_QUOTA_STATE_FILE", None) or Path(settings.VAR_DIR) / "gmail-quota.json")


def quota_store() -> QuotaStore:
    """Redis when ``REDIS_URL`` is set, else the state file (one store per place, per process)."""
    where = settings.REDIS_URL or str(state_file())
    with _lock:
        store = _stores.get(where)
        if store is None:
            store = _stores[where] = RedisQuotaStore(where) if settings.REDIS_URL else FileQuotaStore(Path(where))
        return store


def quota_pacer(email: str, *, project_limit: float = PROJECT_UNITS_PER_MINUTE) -> QuotaPacer:
    """This process's pacer for ``email`` (threads share it, and its adapted limit), on the shared store."""
    limit = float(getattr(settings, "GMAIL_QUOTA_UNITS_PER_SECOND", QUOTA_UNITS_PER_SECOND))
    inflight = float(getattr(settings, "GMAIL_QUOTA_INFLIGHT_SECONDS", INFLIGHT_SECONDS))
    store = quota_store()
    user = email.lower()
    with _lock:
        pacer = _pacers.get(user)
        if pacer is None or pacer.signature() != (limit, project_limit, store, inflight):
            pacer = _pacers[user] = QuotaPacer(
                user=user, limit=limit, project_limit=project_limit, store=store, inflight=inflight
            )
        return pacer
