"""The workbench database: users, sessions, API keys, the audit log and the device cookies' key, beside the core's
labels table.

The schema is Alembic's (`workbench/migrations`); `migrate(url)` brings any database to the latest
revision, SQLite by default, PostgreSQL under `make services`.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from pynomaly_core.labels.feedback import LABELS, METADATA

ROLES = ("viewer", "analyst", "admin")  # each can do what the ones before it can

USERS = sa.Table(
    "users",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),  # no login, no session
)

SESSIONS = sa.Table(
    "sessions",
    METADATA,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # the cookie holds the token; a stolen table does not
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

API_KEYS = sa.Table(
    "api_keys",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # shown in lists, so a key can be told apart
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

AUDIT = sa.Table(
    "audit_log",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user", sa.String(100), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("client", sa.String(100), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_audit_action_user", "action", "user"),
    sa.Index("ix_audit_action_client", "action", "client"),  # the per-client login limit
)

SERVER_KEYS = sa.Table(
    "server_keys",
    METADATA,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),  # random, made by the migration: never leaves the server
)

__all__ = ["API_KEYS", "AUDIT", "LABELS", "METADATA", "ROLES", "SERVER_KEYS", "SESSIONS", "USERS", "audit", "connect", "migrate"]


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the latest schema (creating it when empty)."""
    _private_sqlite_file(url)
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def _private_sqlite_file(url: str) -> None:
    """A SQLite database holds password hashes and session digests: create its file readable by the owner only
    (SQLite gives its -wal and -shm files the same mode)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.chmod(0o600)  # one created before this rule; never opened here: closing a descriptor drops SQLite's locks
    else:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def connect(url: str) -> sa.Engine:
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        # Concurrent writers wait for the lock rather than fail; WAL lets readers go on meanwhile.
        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=10000")
    return engine


def audit(connection, user: str, action: str, detail: str = "", client: str = "") -> int:
    """Record an action; returns the entry's id."""
    entry = connection.execute(AUDIT.insert().values(user=user[:100], action=action, detail=detail[:2000], client=client[:100]))
    return entry.inserted_primary_key[0]
