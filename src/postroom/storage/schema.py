"""The SQL schema, in SQLAlchemy Core. Portable: nothing here is specific to SQLite.

Alembic migrations under `storage/migrations/versions` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UtcDateTime",
    "address_status",
    "api_tokens",
    "archive_checkpoints",
    "archive_ledger",
    "archive_ledger_head",
    "archive_outbox",
    "as_utc",
    "audience_members",
    "audit_log",
    "bounce_results",
    "bounces",
    "deliveries",
    "delivery_logs",
    "instance_secrets",
    "login_throttle",
    "metadata",
    "mirror_pages",
    "qualification_rules",
    "recipients",
    "templates",
    "unqualified_texts",
    "users",
    "workers",
]

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps are aware UTC datetimes in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")
        utc: datetime = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        result: datetime = (
            value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        )
        return result


recipients = Table(
    "recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("email_key", String(320), nullable=False, index=True),  # lower-cased, for dedup
    Column("first_name", String(200), nullable=False, default=""),
    Column("last_name", String(200), nullable=False, default=""),
    Column("email_format", String(16), nullable=False, default="unknown"),
    Column("opted_out", Boolean, nullable=False, default=False),
    Column("fields", JSON, nullable=False, default=dict),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("builtin", Boolean, nullable=False, default=False),
    Column("properties", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("template_name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("properties", JSON, nullable=False),
    Column("audience", JSON, nullable=False),
    Column("salt", String(32), nullable=False),  # unguessable part of Message-IDs
    Column("last_error", Text, nullable=False, default=""),
    Column("proofs", Integer, nullable=False, default=0),
    # Domains the engine slowed down for their temporary failures: [{domain, since, reason,
    # deepest, recovered_at}], for the report.
    Column("slowdowns", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("analyzed_at", UtcDateTime()),
    Column("started_at", UtcDateTime()),
    Column("finished_at", UtcDateTime()),
)

audience_members = Table(
    "audience_members",
    metadata,
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"),
           primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("recipient_id", Integer, ForeignKey("recipients.id", ondelete="CASCADE"),
           nullable=False),
)

delivery_logs = Table(
    "delivery_logs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"),
           nullable=False),
    Column("recipient_id", Integer, ForeignKey("recipients.id", ondelete="SET NULL")),
    Column("email", String(320), nullable=False),
    Column("domain", String(255)),  # lower-cased, for reports by recipient domain
    Column("status", String(16), nullable=False),
    Column("failure_type", String(16)),
    Column("failure_reason", Integer),
    Column("detail", Text, nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime()),
    Column("claimed_until", UtcDateTime()),  # a sender holds it until then (lease)
    Column("claimed_by", String(40)),  # the worker holding the lease
    # Handed to an SMTP connection and not yet recorded: if the lease runs out meanwhile (the
    # worker died), the message may have reached the relay: it is "in doubt".
    Column("attempting", Boolean, nullable=False, default=False),
    Column("in_doubt", Integer, nullable=False, default=0),  # times its fate was unknown
    Column("smtp_reply", Text, nullable=False, default=""),
    Column("message_id", String(255)),
    Column("sent_at", UtcDateTime()),
    Column("size", Integer),
    Column("sha256", String(64)),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_logs_due", "delivery_id", "status", "next_attempt_at"),
)

archive_outbox = Table(
    "archive_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("log_id", Integer, ForeignKey("delivery_logs.id", ondelete="CASCADE"),
           nullable=False),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"),
           nullable=False),
    Column("state", String(16), nullable=False),  # pending | archived | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("claimed_until", UtcDateTime()),
    Column("claimed_by", String(40)),
    Column("in_doubt", Integer, nullable=False, default=0),  # a sender died holding it
    Column("sha256", String(64), nullable=False),
    Column("reply", Text, nullable=False, default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("archived_at", UtcDateTime()),
    UniqueConstraint("log_id", name="uq_archive_one_copy_per_log"),
    Index("ix_archive_due", "state", "next_attempt_at"),
)

# The exact bytes of each copy not yet archived, by its log (one copy per log): written with
# the outbox row, deleted once the copy is archived, kept while it is pending or failed. Apart
# from the outbox row, so that claiming and recording a copy rewrite a small row, not its bytes
# (ADR 0033; before revision 0009 they were `archive_outbox.data`).
archive_copy_data = Table(
    "archive_copy_data",
    metadata,
    Column("log_id", Integer, ForeignKey("delivery_logs.id", ondelete="CASCADE"),
           primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

# The hash ledger (archive/ledger.py): append-only, no foreign keys, so that nothing deleted
# elsewhere takes an entry with it.
archive_ledger = Table(
    "archive_ledger",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # 1, 2, 3, ... no gaps
    Column("copy_id", Integer, nullable=False, unique=True),  # one entry per outbox row
    Column("delivery_id", Integer, nullable=False, index=True),
    Column("log_id", Integer, nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("accepted_at", UtcDateTime(), nullable=False),
    Column("acked_at", UtcDateTime(), nullable=False, index=True),
    Column("ack", Text, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row (id 1): the chain head. Appenders lock it, so concurrent workers make one chain.
archive_ledger_head = Table(
    "archive_ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("head", String(64), nullable=False),
    Column("checkpoint_count", Integer, nullable=False),
    Column("checkpoint_at", UtcDateTime()),
)

archive_checkpoints = Table(
    "archive_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("head", String(64), nullable=False),
    Column("time", UtcDateTime(), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(16), nullable=False),  # worker | send
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("stopped_at", UtcDateTime()),
    Column("delivery_id", Integer),  # what it is sending now, if anything
    Column("sent", Integer, nullable=False, default=0),
    Column("error", Text),  # why it ended, when one of its loops died
)

mirror_pages = Table(
    "mirror_pages",
    metadata,
    Column("log_id", Integer, ForeignKey("delivery_logs.id", ondelete="CASCADE"),
           primary_key=True),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"),
           nullable=False),
    Column("html", LargeBinary, nullable=False),  # zlib of the exact bytes the recipient got
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
)

instance_secrets = Table(
    "instance_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

address_status = Table(
    "address_status",
    metadata,
    Column("address", String(320), primary_key=True),  # normalized: domain lower-cased
    Column("domain", String(255), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),
    Column("error_count", Integer, nullable=False, default=0),
    Column("first_error_at", UtcDateTime()),
    Column("last_error_at", UtcDateTime()),
    Column("last_reason", Integer),
    Column("last_type", String(16)),
    Column("last_text", Text, nullable=False, default=""),
    Column("status_since", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

qualification_rules = Table(
    "qualification_rules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("position", Integer, nullable=False, index=True),
    Column("pattern", Text, nullable=False, default=""),  # regular expression on the text
    Column("status", String(16), nullable=False, default=""),  # enhanced status code prefix
    Column("failure_type", String(16), nullable=False),
    Column("reason", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("builtin", Boolean, nullable=False, default=False),
)

unqualified_texts = Table(
    "unqualified_texts",
    metadata,
    Column("key", String(64), primary_key=True),  # SHA-256 of the normalized text
    Column("normalized", Text, nullable=False),
    Column("first_text", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("first_seen", UtcDateTime(), nullable=False),
    Column("last_seen", UtcDateTime(), nullable=False),
)

bounces = Table(
    "bounces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),  # the same mail twice: once
    Column("source", String(255), nullable=False),
    Column("envelope_to", String(320), nullable=False, default=""),
    Column("data", LargeBinary, nullable=False),
    # new | processing | processed | unattributed | unrecognized
    Column("state", String(16), nullable=False, index=True),
    Column("kind", String(16), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("processed_at", UtcDateTime()),
)

bounce_results = Table(
    "bounce_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("bounce_id", Integer, ForeignKey("bounces.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("recipient", String(320), nullable=False, default=""),
    Column("log_id", Integer, ForeignKey("delivery_logs.id", ondelete="SET NULL"), index=True),
    Column("status", String(16), nullable=False, default=""),
    Column("action", String(16), nullable=False, default=""),
    Column("failure_type", String(16), nullable=False),
    Column("reason", Integer, nullable=False),
    Column("rule_id", String(64)),
    Column("attributed_by", String(16), nullable=False, default=""),  # verp | message-id
    Column("applied", Boolean, nullable=False, default=False),
)


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("password_hash", String(255), nullable=False),  # argon2id, "" when none set
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("name", String(100), nullable=False, default=""),
    Column("role", String(32)),  # narrower role than the user's; None: the user's own
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_used_at", UtcDateTime()),
    Column("revoked_at", UtcDateTime()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False, index=True),
    Column("actor", String(64), nullable=False, index=True),
    Column("role", String(32), nullable=False),
    Column("origin", String(16), nullable=False),  # cli | api | console | system
    Column("remote", String(64)),
    Column("action", String(64), nullable=False, index=True),  # "<concern>.<method>"
    Column("target", String(255), nullable=False, default=""),
    Column("before", JSON),
    Column("after", JSON),
    Column("outcome", String(16), nullable=False),  # ok | denied | error
    Column("detail", Text, nullable=False, default=""),
)

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of name + remote
    Column("failures", Integer, nullable=False),
    Column("first_failure_at", UtcDateTime(), nullable=False),
    Column("locked_until", UtcDateTime()),
)


def as_utc(value: Any) -> datetime | None:
    """min()/max() over a column bypass the column type on SQLite (text, or naive): the value
    as an aware UTC time."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
