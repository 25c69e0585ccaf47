"""Accounts, sessions, CSRF tokens, the failed-login limits, device cookies and API keys.

Passwords are argon2 hashes (argon2-cffi). Session and API-key tokens are long random strings,
so the database keeps their SHA-256 only: a leaked table opens nothing. Device cookies (OWASP's
"Slow Down Online Guessing Attacks with Device Cookies") are signed with a key kept in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from .db import API_KEYS, AUDIT, ROLES, SERVER_KEYS, SESSIONS, USERS, audit

SESSION_HOURS = 12
MAX_FAILED_LOGINS = 5  # per user name within FAILED_LOGIN_WINDOW, then refused until it passes or an admin unlocks it
# Per client address: one password tried across many names, or many accounts locked from one place. Above the per-name
# limit so a user's own typos never reach it; addresses shared behind a NAT share it too (docs/security.md).
MAX_FAILED_LOGINS_PER_CLIENT = 20
FAILED_LOGIN_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_SCORE = 3  # zxcvbn's 0-4: 3 is "safely unguessable" (about 10^8 guesses), well beyond an online attack
KEY_PREFIX = "pyn_"
DEVICE_COOKIE_DAYS = 90  # a device cookie's default lifetime (PYNOMALY_DEVICE_COOKIE_DAYS); each login issues a new one
DEVICE_FAILED = "login_failed_device"  # a wrong password from a trusted device (its detail: the device): counts for that device only
UNLOCKED = "account_unlocked"  # the audit action of an admin's unlock (its detail: the account): earlier failures stop counting

_hasher = PasswordHasher()
# In one process, logins take turns at the limits' bookkeeping and at most one argon2 check per core runs: waiting
# threads sleep on these rather than poll SQLite's lock or crowd the cores (and the GIL) the running ones need.
# Under a flood each login then holds the database for milliseconds, and the cores for its own check only.
_bookkeeping = threading.Lock()
_checking = threading.BoundedSemaphore(os.cpu_count() or 1)
# One login at a time per client address: a flood from one address is refused at once rather than queued ahead of
# everyone else's logins (people behind one NAT logging in at the same instant retry; docs/security.md).
_in_flight: set[str] = set()
_in_flight_lock = threading.Lock()
# A login from a trusted device checks its password in slots of its own, beside the per-core ones: it never waits
# behind a flood's checks (at worst the cores run twice as many checks for a moment, only for trusted devices).
_trusted_checking = threading.BoundedSemaphore(os.cpu_count() or 1)
# Checked when the user does not exist, so an unknown name costs the same argon2 work as a known one.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
NAME_LENGTH = USERS.c.name.type.length


class AuthError(ValueError):
    pass


class TooManyAttempts(AuthError):
    pass


class DeviceLocked(TooManyAttempts):
    """A device cookie refused after MAX_FAILED_LOGINS wrong passwords: its login is to be tried as an untrusted one."""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def normalise_name(name: str) -> str:
    """The form a user name is stored and looked up in: NFKC (so full-width or ligature forms are the plain letters), trimmed."""
    return unicodedata.normalize("NFKC", name).strip()


def check_name(name: str) -> str:
    """The normalised name, or AuthError saying why it cannot be an account's: letters of one script only, so that
    `rооt1` with Cyrillic o's cannot stand beside `root1`."""
    name = normalise_name(name)
    if not name:
        raise AuthError("the user name is empty")
    if len(name) > NAME_LENGTH:
        raise AuthError(f"the user name may have at most {NAME_LENGTH} characters, not {len(name)}")
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        raise AuthError("the user name may not hold spaces or control characters")
    scripts = sorted({unicodedata.name(ch, "UNKNOWN").split()[0] for ch in name if ch.isalpha()})
    if len(scripts) > 1:
        raise AuthError(f"the user name mixes letters of {' and '.join(scripts)}: use one script")
    return name


def check_password(password: str, name: str) -> None:
    """AuthError with zxcvbn's reason for a short, common or guessable password (the name itself counts as guessable)."""
    if len(password) < 8:
        raise AuthError("the password needs at least 8 characters")
    if len(password) > 200:
        raise AuthError("the password may have at most 200 characters")
    from zxcvbn import zxcvbn

    verdict = zxcvbn(password[:72], user_inputs=[name])  # zxcvbn refuses longer input; 72 characters are beyond guessing
    if verdict["score"] < MIN_PASSWORD_SCORE:
        feedback = verdict["feedback"]
        reason = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions", [])])) or "it is too easy to guess."
        raise AuthError(f"the password is too weak: {reason}")


def add_user(connection, name: str, password: str, role: str) -> str:
    """Create the account; returns its name as stored (normalised)."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    name = check_name(name)
    check_password(password, name)
    if connection.execute(sa.select(USERS.c.id).where(USERS.c.name == name)).first():
        raise AuthError(f"user {name!r} exists already")
    connection.execute(USERS.insert().values(name=name, password_hash=_hasher.hash(password), role=role))
    return name


def _failures(connection, column, value: str, action: str = "login_failed") -> int:
    """Failed logins for one name, client or device within the window, since an admin last unlocked that name."""
    since = _now() - FAILED_LOGIN_WINDOW
    query = sa.select(sa.func.count()).where(AUDIT.c.action == action, column == value, AUDIT.c.created_at >= since)
    if column is AUDIT.c.user:
        unlocked = sa.select(sa.func.max(AUDIT.c.id)).where(AUDIT.c.action == UNLOCKED, AUDIT.c.detail == value).scalar_subquery()
        query = query.where(AUDIT.c.id > sa.func.coalesce(unlocked, 0))
    return connection.execute(query).scalar_one()


def recent_failures(connection, name: str) -> int:
    return _failures(connection, AUDIT.c.user, name)


def _serialise(connection, name: str, client: str) -> None:
    """Make concurrent logins for the same name or from the same client wait for each other until commit, so each
    counts the attempts before it: otherwise a burst all read the same count and pass the limit."""
    if connection.dialect.name == "postgresql":
        for key in sorted({f"name:{name}", f"client:{client}"}):  # one order, so two logins never wait on each other in a circle
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})
    else:  # SQLite has one writer at a time: any write, even of no row, takes the database's lock
        connection.execute(USERS.update().where(USERS.c.name == name).values(name=USERS.c.name))


@contextmanager
def _one_at_a_time(client: str):
    with _in_flight_lock:
        if client in _in_flight:
            raise TooManyAttempts("another login from this address is in progress; try again in a moment")
        _in_flight.add(client)
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight.discard(client)


def device_key(connection) -> bytes:
    return bytes.fromhex(connection.execute(sa.select(SERVER_KEYS.c.value).where(SERVER_KEYS.c.name == "device_cookie")).scalar_one())


def _sign(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def device_cookie(key: bytes, name: str, days: int) -> str:
    """A new device cookie for the user `name`: the name, a nonce and the expiry, signed. It opens nothing by itself:
    it only makes that name's next logins from this device trusted (see `login`)."""
    expires = int((_now() + timedelta(days=days)).timestamp())
    body = f"{name.encode().hex()}.{secrets.token_urlsafe(12)}.{expires}"
    return f"{body}.{_sign(key, body)}"


def trusted_device(key: bytes, cookie: str | None, name: str) -> str | None:
    """The device's nonce when `cookie` is an unexpired device cookie of ours for the name being tried; else None.
    Only the cookie decides, never whether the name exists, so which logins are trusted tells nothing about names."""
    if not cookie or cookie.count(".") != 3:
        return None
    body, signature = cookie.rsplit(".", 1)
    if not hmac.compare_digest(_sign(key, body).encode(), signature.encode()):
        return None
    cookie_name, nonce, expires = body.split(".")  # signed by us: well formed
    if int(expires) < _now().timestamp() or bytes.fromhex(cookie_name).decode() != _login_name(name):
        return None
    return nonce


def _login_name(name: str) -> str:
    return normalise_name(name)[:NAME_LENGTH]


def login(engine: sa.Engine, name: str, password: str, client: str, device: str | None = None) -> tuple[str, User]:
    """A new session's token for a right password; AuthError otherwise. Every failure is audited and counts towards the
    limits, whether or not the user exists (so names cannot be probed).

    Three short transactions, none open during the argon2 check (tens of milliseconds of a core each), so a flood of
    logins never holds the database: the attempt is first recorded as a failure under the limits' lock, then the
    password is checked, then a right one turns that record into the login.

    `device` is the nonce of a trusted device cookie for this name (`trusted_device`). As OWASP's device cookies have
    it, such an attempt is exempt from the per-name and per-client limits and the one login in flight per address
    (a locked name still lets its owner in from their device); its failures count for the device, which is refused
    at MAX_FAILED_LOGINS (DeviceLocked); and its password check has slots of its own."""
    with _one_at_a_time(client if device is None else f"device {device}"):
        return _login(engine, _login_name(name), password, client, device)


def _login(engine: sa.Engine, name: str, password: str, client: str, device: str | None) -> tuple[str, User]:
    with _bookkeeping, engine.begin() as connection:
        _serialise(connection, name, client)
        if device is None:
            if recent_failures(connection, name) >= MAX_FAILED_LOGINS:
                raise TooManyAttempts(f"too many failed logins for {name!r}; try again in {FAILED_LOGIN_WINDOW.seconds // 60} minutes")
            if _failures(connection, AUDIT.c.client, client[:100]) >= MAX_FAILED_LOGINS_PER_CLIENT:
                raise TooManyAttempts(f"too many failed logins from this address; try again in {FAILED_LOGIN_WINDOW.seconds // 60} minutes")
        elif _failures(connection, AUDIT.c.detail, f"device {device}", DEVICE_FAILED) >= MAX_FAILED_LOGINS:
            raise DeviceLocked(f"too many failed logins from this device; try again in {FAILED_LOGIN_WINDOW.seconds // 60} minutes")
        row = connection.execute(sa.select(USERS).where(USERS.c.name == name)).mappings().first()
        if device is None:
            attempt = audit(connection, name, "login_failed", client=client)
        else:
            attempt = audit(connection, name, DEVICE_FAILED, detail=f"device {device}", client=client)
    try:
        with _checking if device is None else _trusted_checking:
            _hasher.verify(_DUMMY_HASH if row is None else row["password_hash"], password)
    except VerificationError:
        raise AuthError("wrong user name or password") from None
    if row is None:
        raise AuthError("wrong user name or password")
    if row["disabled"]:
        raise AuthError("this account is disabled; ask an admin")
    token = secrets.token_urlsafe(32)
    with _bookkeeping, engine.begin() as connection:
        connection.execute(AUDIT.update().where(AUDIT.c.id == attempt).values(action="login"))
        connection.execute(SESSIONS.insert().values(
            token_hash=_digest(token), user_id=row["id"], csrf_token=secrets.token_urlsafe(32), expires_at=_now() + timedelta(hours=SESSION_HOURS)
        ))
    return token, User(row["id"], row["name"], row["role"])


def set_disabled(connection, name: str, disabled: bool) -> bool:
    """Disable an account (ending its sessions) or enable it again; False when there is no such user."""
    user_id = connection.execute(sa.select(USERS.c.id).where(USERS.c.name == name)).scalar_one_or_none()
    if user_id is None:
        return False
    connection.execute(USERS.update().where(USERS.c.id == user_id).values(disabled=disabled))
    if disabled:
        end_sessions(connection, name)
    return True


def end_sessions(connection, name: str) -> int:
    """Log the user out everywhere; how many sessions ended."""
    user_id = sa.select(USERS.c.id).where(USERS.c.name == name).scalar_subquery()
    return connection.execute(SESSIONS.delete().where(SESSIONS.c.user_id == user_id)).rowcount


def session_user(connection, token: str | None) -> tuple[User, str] | None:
    """The user and CSRF token of a live session."""
    if not token:
        return None
    query = (
        sa.select(USERS.c.id, USERS.c.name, USERS.c.role, SESSIONS.c.csrf_token, SESSIONS.c.expires_at)
        .join(SESSIONS, SESSIONS.c.user_id == USERS.c.id)
        .where(SESSIONS.c.token_hash == _digest(token), sa.not_(USERS.c.disabled))
    )
    row = connection.execute(query).first()
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)  # SQLite drops the zone
    if expires < _now():
        return None
    return User(row.id, row.name, row.role), row.csrf_token


def logout(connection, token: str) -> None:
    connection.execute(SESSIONS.delete().where(SESSIONS.c.token_hash == _digest(token)))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected.encode(), given.encode())  # str operands must be ASCII


def create_api_key(connection, model_name: str, created_by: str) -> str:
    """A new key for `model_name`; only its hash is kept, so this is the one time it is seen."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    connection.execute(API_KEYS.insert().values(key_hash=_digest(key), prefix=key[:12], model_name=model_name, created_by=created_by))
    return key


def revoke_api_key(connection, key_id: int) -> bool:
    """Revoke a live key; False when no live key has that id (unknown, or revoked already)."""
    revoked = connection.execute(API_KEYS.update().where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None)).values(revoked_at=_now()))
    return revoked.rowcount == 1


def api_key_model(connection, key: str | None) -> str | None:
    """The model a live key may score with; None for a missing, unknown or revoked key."""
    if not key:
        return None
    query = sa.select(API_KEYS.c.model_name).where(API_KEYS.c.key_hash == _digest(key), API_KEYS.c.revoked_at.is_(None))
    return connection.execute(query).scalar_one_or_none()
