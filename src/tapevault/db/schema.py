"""The tables, in SQLAlchemy Core: one description for SQLite and PostgreSQL alike.

Migrations in ``migrations/versions`` create exactly these; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)

metadata = MetaData()

# The recordings that hold their call channel: any but a failed one (which may be replaced).
CHANNEL_TAKEN_WHERE = "channel IN ('inbound', 'outbound') AND status <> 'failed'"

# The sessions on legal hold (the listing's on_hold=true).
HELD_WHERE = "hold_set_ms IS NOT NULL"

# Recordings the retention purge may still take, and tombstones whose audio is still to be
# removed (migration 0023): the purge's queries use these very texts, so that PostgreSQL matches
# the partial indexes whatever plan it makes.
DUE_WHERE = "status IN ('available', 'failed')"
UNREMOVED_WHERE = "removed_ms IS NULL AND status IN ('expired', 'deleted')"

partners = Table(
    "partners",
    metadata,
    Column("partner_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("jwt_secret", Text, nullable=False),
    Column("retention_seconds", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # One row per tenant: its Suki partner, Kore app and Amigo workspace (migration 0003).
    Column("workspace_id", String(36), nullable=False),
    Column("bot_id", String(64), nullable=False),
    Column("kore_client_id", String(64), nullable=False),
    Column("kore_client_secret", Text, nullable=False),
    Column("suki_public_keys", Text, nullable=True),
    Column("recording_enabled", Boolean, nullable=False, server_default=true()),
    # Migration 0010: NULL follows TAPEVAULT_TENANT_QUOTA, 0 is unlimited, else bytes.
    Column("storage_quota_bytes", BigInteger, nullable=True),
    # Migration 0018: "gateway" (tapevault serves the bytes) or "direct" (the store's own URLs).
    Column("delivery", String(16), nullable=False, server_default="gateway"),
    UniqueConstraint("workspace_id", name="uq_partners_workspace_id"),
    UniqueConstraint("bot_id", name="uq_partners_bot_id"),
    UniqueConstraint("kore_client_id", name="uq_partners_kore_client_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger, nullable=True),
    Column("external_id", String(64), nullable=True),
    Column("attributes", Text, nullable=True),  # JSON object of strings
    # Retention and legal hold (migration 0004): an override of the tenant's retention, the
    # hold that stops purge and deletion, and when the session was deleted on request.
    Column("retention_seconds", BigInteger, nullable=True),
    Column("hold_reason", Text, nullable=True),
    Column("hold_by", String(200), nullable=True),
    Column("hold_set_ms", BigInteger, nullable=True),
    Column("deleted_ms", BigInteger, nullable=True),
    # Who created it (migration 0013): Suki's provider id, for finding a clinician's sessions.
    Column("provider_id", String(200), nullable=True),
    Index("ix_sessions_partner", "partner_id", "session_id"),
    UniqueConstraint("partner_id", "external_id", name="uq_sessions_partner_external"),
    # The listing (migration 0013): newest first by (created_ms, session_id) within a tenant,
    # alone or after an equality filter; held sessions are few, so they get a partial index.
    Index("ix_sessions_partner_created", "partner_id", "created_ms", "session_id"),
    Index("ix_sessions_partner_kind", "partner_id", "kind", "created_ms", "session_id"),
    Index("ix_sessions_partner_provider", "partner_id", "provider_id", "created_ms", "session_id"),
    Index(
        "ix_sessions_partner_held",
        "partner_id",
        "created_ms",
        "session_id",
        sqlite_where=text(HELD_WHERE),
        postgresql_where=text(HELD_WHERE),
    ),
)

recordings = Table(
    "recordings",
    metadata,
    Column("recording_id", String(32), primary_key=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("sequence_number", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("storage_key", String(300), nullable=False),
    Column("sample_rate", Integer, nullable=False),
    Column("channels", Integer, nullable=False),
    Column("bits_per_sample", Integer, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("source_format", String(40), nullable=False, server_default=""),
    Column("recovered", Boolean, nullable=False, server_default=false()),
    Column("failure_reason", Text, nullable=True),
    Column("channel", String(16), nullable=True),
    Column("media_start_epoch_ms", BigInteger, nullable=True),
    Column("writer_id", String(120), nullable=True),
    Column("heartbeat_ms", BigInteger, nullable=True),
    # Retention override and tombstone (migration 0004): what removed the audio, when, and why.
    Column("retention_seconds", BigInteger, nullable=True),
    Column("purged_ms", BigInteger, nullable=True),
    Column("purge_reason", String(16), nullable=True),  # "expired" or "deleted"
    Column("retention_policy", String(16), nullable=True),  # tenant, session or recording
    Column("deleted_by", String(200), nullable=True),
    Column("removed_ms", BigInteger, nullable=True),  # when the tombstoned audio left storage
    # The node whose disk holds a live stream's spool (migration 0020).
    Column("spool_node", String(80), nullable=True),
    UniqueConstraint("session_id", "sequence_number", name="uq_recordings_session_sequence"),
    Index("ix_recordings_status", "status"),
    # The listing's expiring_before (migration 0013): recordings by expiry, the tenant checked
    # in the index. Expiry first: led by partner_id, SQLite (without ANALYZE) preferred it to the
    # session index for a page's recordings and read the tenant's every recording.
    Index("ix_recordings_expires_partner", "expires_ms", "partner_id"),
    # The purge (migration 0023): what may still be purged, by expiry (the tombstones of years
    # of purges no longer lie in front of it), and tombstones whose audio is still to go.
    Index(
        "ix_recordings_due",
        "expires_ms",
        sqlite_where=text(DUE_WHERE),
        postgresql_where=text(DUE_WHERE),
    ),
    Index(
        "ix_recordings_unremoved",
        "recording_id",
        sqlite_where=text(UNREMOVED_WHERE),
        postgresql_where=text(UNREMOVED_WHERE),
    ),
    # A call's channel takes one recording, unless that one failed (migration 0009): enforced
    # here, since concurrent uploads each checking first would all find the channel free.
    Index(
        "uq_recordings_session_channel",
        "session_id",
        "channel",
        unique=True,
        sqlite_where=text(CHANNEL_TAKEN_WHERE),
        postgresql_where=text(CHANNEL_TAKEN_WHERE),
    ),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("recording_id", String(32), ForeignKey("recordings.recording_id"), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_after_ms", BigInteger, nullable=False),
    Column("lease_owner", String(120), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("done_ms", BigInteger, nullable=True),
    # Only this node's workers may lease the job (until node_until_ms when set); NULL: any node.
    Column("node", String(80), nullable=True),
    Column("node_until_ms", BigInteger, nullable=True),
    Index("ix_jobs_due", "done_ms", "run_after_ms"),
)

# Periodic tasks that one node at a time may run (the retention purge, the audit pruning): held
# by ``owner`` until ``expires_ms`` by the database's clock, renewed by each run of its holder.
task_leases = Table(
    "task_leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("owner", String(120), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

stream_tickets = Table(
    "stream_tickets",
    metadata,
    Column("ticket_hash", String(64), primary_key=True),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("provider_id", String(200), nullable=True),
    Column("expires_ms", BigInteger, nullable=False),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("secret_hex", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("revoked_ms", BigInteger, nullable=True),
    Index("ix_api_keys_partner", "partner_id"),
    UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)

# Links to the player page (migration 0016): the secret is kept as its SHA-256 only.
player_links = Table(
    "player_links",
    metadata,
    Column("link_id", String(32), primary_key=True),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    Index("ix_player_links_partner_session", "partner_id", "session_id", "created_ms"),
)

# The tamper-evident access log (migration 0004): each record carries the SHA-256 of the one before
# (see core/audit.py); ``audit_state`` holds the head and is the lock that serialises appends.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    # The columns a query filters on, copied out of ``entry``. The verifier rebuilds each record
    # from the entry *with these values*, so editing one of them breaks the hash like any edit.
    Column("at_ms", BigInteger, nullable=False),
    Column("tenant_id", String(64), nullable=True),
    Column("action", String(40), nullable=False),
    Column("actor_id", String(200), nullable=True),
    Column("session_id", String(64), nullable=True),
    Column("recording_id", String(64), nullable=True),
    # Every field of the record as JSON: one text column costs an audited request far less than
    # a column per field, and reads (audit queries, verification) are rare.
    Column("entry", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_tenant_seq", "tenant_id", "seq"),
    # A recording's history (migration 0024): each half in seq order, a page at a time.
    Index("ix_audit_recording_seq", "recording_id", "seq"),
    Index("ix_audit_session_seq", "session_id", "seq"),
    # No index on at_ms: time filters ride the (tenant_id, seq) scan, seq grows with time, and
    # every index costs each audited request an extra B-tree insert.
)

audit_state = Table(
    "audit_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("head_seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    # Where the retained log starts once old records were pruned by the audit retention.
    Column("first_seq", BigInteger, nullable=False),
    Column("first_prev_hash", String(64), nullable=False),
    # The Merkle tree (migration 0021): leaf 0 is record ``tree_first_seq``; ``tree_size``
    # leaves are in ``audit_tree`` (behind ``head_seq`` only while an older log is backfilled).
    Column("tree_first_seq", BigInteger, nullable=False, server_default="1"),
    Column("tree_size", BigInteger, nullable=False, server_default="0"),
)

# Records durable but not yet integrated (migration 0021): what a request waits for is one row
# here, inserted with many others in one transaction, no sequence number, no hash, no shared row.
# The integrator (one per deployment) moves them into ``audit_log`` in id order, then deletes
# them, in one transaction. On PostgreSQL ids are not committed in order; deleting what was
# integrated (rather than remembering the highest id) is what makes a late commit safe.
audit_incoming = Table(
    "audit_incoming",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("entry", Text, nullable=False),  # the entry as JSON (db/auditstore.py entry_json)
    sqlite_autoincrement=True,  # ids never reused: ``settle`` waits for ids up to a mark
)

# Every perfect subtree of the Merkle tree (core/merkle.py): written once, never changed.
audit_tree = Table(
    "audit_tree",
    metadata,
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("head_hash", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(128), nullable=False),
    # The signed note over the Merkle tree (0021; NULL before it, or while it is backfilled).
    Column("tree_size", BigInteger, nullable=True),
    Column("root_hash", String(64), nullable=True),
    Column("note_signature", String(128), nullable=True),
)

# Every key that signed a checkpoint (migration 0022): its public half as a signed-note verifier
# key, the node that first signed with it. Read by `tapevault audit verify` as a convenience only:
# whoever writes the database can add a row, so verify says which keys it trusted from here.
audit_signers = Table(
    "audit_signers",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("vkey", String(200), nullable=False),
    Column("node", String(200), nullable=True),
    Column("first_ms", BigInteger, nullable=False),
)

# Playbacks in progress: written (durably) before a playback's first byte, sealed into one
# ``media.playback`` record of the chain when the playback goes idle.
audit_pending = Table(
    "audit_pending",
    metadata,
    Column("playback_id", String(32), primary_key=True),
    Column("owner", String(120), nullable=False),  # the process folding it
    Column("entry", Text, nullable=False),  # the record so far, as JSON
    Column("opened_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Bumped by every change to what may be served (deletion, purge, hold, retention): processes
# re-read it every second and drop their caches of recordings and sessions when it moved.
cache_epoch = Table(
    "cache_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
)

# Webhooks (migration 0017). Endpoints a tenant registered; its secrets are kept as given out,
# since they sign (the previous one too, while a rotation's overlap lasts).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", String(40), primary_key=True),
    Column("partner_id", String(64), ForeignKey("partners.partner_id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(200), nullable=True),
    Column("event_types", Text, nullable=False),  # space-separated
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_until_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
    Column("disabled_reason", String(300), nullable=True),
    # A removed endpoint stays as a row without secrets: an event committing at that moment
    # may still reference it (and is never sent, the endpoint being disabled too).
    Column("deleted_ms", BigInteger, nullable=True),
    Index("ix_webhook_endpoints_partner", "partner_id", "created_ms"),
)

# The outbox: an event is written in the transaction of the change it reports. ``position``
# grows with every event; a session's events are written under its row lock, so their
# positions are in commit order, the order they are delivered in.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", String(40), nullable=False),
    Column("partner_id", String(64), nullable=False),
    Column("type", String(40), nullable=False),
    Column("session_id", String(64), nullable=False),
    Column("recording_id", String(64), nullable=True),
    Column("subject", String(80), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    UniqueConstraint("event_id", name="uq_webhook_events_event_id"),
    UniqueConstraint("subject", "sequence", name="uq_webhook_events_subject_sequence"),
)

# One row per (endpoint, event) and per replay. Leased with the database's clock, like jobs.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(40), primary_key=True),
    Column(
        "endpoint_id",
        String(40),
        ForeignKey("webhook_endpoints.endpoint_id"),
        nullable=False,
    ),
    Column("event_position", BigInteger, ForeignKey("webhook_events.position"), nullable=False),
    Column("partner_id", String(64), nullable=False),
    Column("session_id", String(64), nullable=False),  # the ordering key, copied from the event
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("last_attempt_ms", BigInteger, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("delivered_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_ms"),
    Index("ix_webhook_deliveries_order", "endpoint_id", "session_id", "status", "event_position"),
    Index("ix_webhook_deliveries_log", "endpoint_id", "created_ms", "delivery_id"),
)
