"""Accounts, sessions, CSRF tokens, the failed-login limit and API keys.

Passwords are argon2 hashes (argon2-cffi). Session and API-key tokens are long random strings,
so the database keeps their SHA-256 only: a leaked table opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from .db import API_KEYS, AUDIT, ROLES, SESSIONS, USERS, audit

SESSION_HOURS = 12
MAX_FAILED_LOGINS = 5  # per user name within FAILED_LOGIN_WINDOW, then refused until it passes
FAILED_LOGIN_WINDOW = timedelta(minutes=15)
KEY_PREFIX = "pyn_"

_hasher = PasswordHasher()
# Checked when the user does not exist, so an unknown name costs the same argon2 work as a known one.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
NAME_LENGTH = USERS.c.name.type.length


class AuthError(ValueError):
    pass


class TooManyAttempts(AuthError):
    pass


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


def add_user(connection, name: str, password: str, role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if len(name) > NAME_LENGTH:
        raise AuthError(f"the user name may have at most {NAME_LENGTH} characters, not {len(name)}")
    if len(password) < 8:
        raise AuthError("the password needs at least 8 characters")
    if connection.execute(sa.select(USERS.c.id).where(USERS.c.name == name)).first():
        raise AuthError(f"user {name!r} exists already")
    connection.execute(USERS.insert().values(name=name, password_hash=_hasher.hash(password), role=role))


def recent_failures(connection, name: str) -> int:
    since = _now() - FAILED_LOGIN_WINDOW
    query = sa.select(sa.func.count()).where(AUDIT.c.action == "login_failed", AUDIT.c.user == name, AUDIT.c.created_at >= since)
    return connection.execute(query).scalar_one()


def login(connection, name: str, password: str, client: str) -> tuple[str, User]:
    """A new session's token for a right password; AuthError otherwise. Every failure is audited and
    counts towards the limit, whether or not the user exists (so names cannot be probed)."""
    # Concurrent logins to one account wait here for each other until commit (a row lock on PostgreSQL, the write lock
    # on SQLite), so each counts the failures of those before it: otherwise a burst all read the same count and pass.
    connection.execute(USERS.update().where(USERS.c.name == name).values(name=USERS.c.name))
    if recent_failures(connection, name) >= MAX_FAILED_LOGINS:
        raise TooManyAttempts(f"too many failed logins for {name!r}; try again in {FAILED_LOGIN_WINDOW.seconds // 60} minutes")
    row = connection.execute(sa.select(USERS).where(USERS.c.name == name)).mappings().first()
    try:
        _hasher.verify(_DUMMY_HASH if row is None else row["password_hash"], password)
        if row is None:
            raise VerificationError
    except VerificationError:
        audit(connection, name, "login_failed", client=client)
        raise AuthError("wrong user name or password") from None
    token = secrets.token_urlsafe(32)
    connection.execute(SESSIONS.insert().values(
        token_hash=_digest(token), user_id=row["id"], csrf_token=secrets.token_urlsafe(32), expires_at=_now() + timedelta(hours=SESSION_HOURS)
    ))
    audit(connection, name, "login", client=client)
    return token, User(row["id"], row["name"], row["role"])


def session_user(connection, token: str | None) -> tuple[User, str] | None:
    """The user and CSRF token of a live session."""
    if not token:
        return None
    query = (
        sa.select(USERS.c.id, USERS.c.name, USERS.c.role, SESSIONS.c.csrf_token, SESSIONS.c.expires_at)
        .join(SESSIONS, SESSIONS.c.user_id == USERS.c.id)
        .where(SESSIONS.c.token_hash == _digest(token))
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


def revoke_api_key(connection, key_id: int) -> None:
    connection.execute(API_KEYS.update().where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_at.is_(None)).values(revoked_at=_now()))


def api_key_model(connection, key: str | None) -> str | None:
    """The model a live key may score with; None for a missing, unknown or revoked key."""
    if not key:
        return None
    query = sa.select(API_KEYS.c.model_name).where(API_KEYS.c.key_hash == _digest(key), API_KEYS.c.revoked_at.is_(None))
    return connection.execute(query).scalar_one_or_none()
