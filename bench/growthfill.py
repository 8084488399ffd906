"""Fill a migrated tapevault database with years of history, fast (issue 14, part 6).

``python -m bench.growth fill --scale 0.01 --data-dir DIR [--database-url postgresql://...]``

Scale 1.0 is the issue's vault: 1,000 tenants, 2 million sessions, 10 million recordings, 50
million access records, 1 million of the recordings past retention and not yet purged (and twice
as many purged before: tombstones, as a vault that has run for years holds). Tenants' sizes
follow a Zipf law (the first tenant holds about an eighth of the sessions, the median one a few
hundred at scale 1); sessions and recordings are spread over three years, recent ones weighted
as a growing service's are not (uniformly: the simplest honest spread); access records follow
time, each to a recording that existed then, recent ones far more often.

The access log is the real one: records chained with ``core/audit.py``'s canonical encoding,
leaves and perfect subtrees from ``core/merkle.py``'s ``Appender``, signed checkpoints (chain
head and tree note) from ``core/checkpoints.py`` with the deployment's own key file, continued
from whatever head the database already has. ``tapevault audit verify`` passes on it.

Writes go in bulk: PostgreSQL ``COPY`` (text format, formatted here), SQLite ``executemany`` in
large transactions with ``synchronous=OFF`` for the fill only. Ids are scrambled counters (random
looking, as uuid4s are, so indexes see random inserts), derived from positions, so the fill never
holds 10 million ids in memory: per recording it keeps its session's number (4 bytes), per
session its tenant's (2 bytes).
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tapevault.core import merkle
from tapevault.core.checkpoints import CheckpointSigner, load_or_create_signer
from tapevault.db.auditstore import ROW_COLUMNS, SqlAuditStore
from tapevault.db.engine import make_engine

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
SPAN_MS = 3 * YEAR_MS  # the history's length

FULL = {
    "tenants": 1_000,
    "sessions": 2_000_000,
    "recordings": 10_000_000,
    "records": 50_000_000,
    "expired": 1_000_000,  # past retention, not yet purged
    "purged": 2_000_000,  # purged before: tombstones
}
CHECKPOINT_EVERY = 10_000  # records between two signed checkpoints (the integrator: seconds)
_MASK = (1 << 64) - 1
_MULT = 0x9E3779B97F4A7C15  # odd: multiplying by it permutes 64-bit counters


@dataclass(frozen=True)
class Plan:
    tenants: int
    sessions: int
    recordings: int
    records: int
    expired: int
    purged: int
    seed: int = 14

    @classmethod
    def scaled(cls, scale: float, seed: int = 14) -> Plan:
        def n(key: str, least: int) -> int:
            return max(least, round(FULL[key] * scale))

        tenants = max(3, min(FULL["tenants"], round(FULL["tenants"] * min(1.0, scale * 10))))
        return cls(
            tenants=tenants,
            sessions=n("sessions", 20),
            recordings=n("recordings", 100),
            records=n("records", 500),
            expired=n("expired", 10),
            purged=n("purged", 20),
            seed=seed,
        )


@dataclass
class Filled:
    """What the fill made, and how long each part took."""

    plan: Plan
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    big_tenant: str = ""
    typical_tenant: str = ""
    hot_recording: str = ""  # a recording of the big tenant with a long access history
    head_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.__dict__,
            "counts": self.counts,
            "seconds": self.seconds,
            "big_tenant": self.big_tenant,
            "typical_tenant": self.typical_tenant,
            "hot_recording": self.hot_recording,
            "head_seq": self.head_seq,
        }


# --- ids --------------------------------------------------------------------------------------


def _scramble(n: int, salt: int) -> int:
    return ((n + 1) * _MULT ^ salt) & _MASK


def session_id(n: int) -> str:
    """Session ``n``'s id: uuid4-shaped, random looking."""
    h = f"{_scramble(n, 0x5E55):016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[1:4]}-{h[4:8]}{_scramble(n, 0x1D):08x}"[:36]


def recording_id(n: int) -> str:
    return f"{_scramble(n, 0x2EC0):016x}{_scramble(n, 0x77):016x}"


def tenant_id(n: int) -> str:
    return f"{_scramble(n, 0x7E4A):016x}{n:016x}"


# --- sinks --------------------------------------------------------------------------------------


class Sink:
    """Bulk writes to one database."""

    name = ""

    def put(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def secondary_indexes(self, tables: Sequence[str]) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the plain indexes on ``tables`` (not keys or uniques)."""
        raise NotImplementedError

    def analyze(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _chunked(rows: Iterable[Sequence[Any]], size: int) -> Iterator[list[Sequence[Any]]]:
    chunk: list[Sequence[Any]] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class SqliteSink(Sink):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        # For the fill only (the server sets its own on connect): a crash leaves a half-made
        # benchmark database, which is thrown away anyway.
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA cache_size=-262144")  # 256 MiB

    def put(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608
        )
        count = 0
        for chunk in _chunked(rows, 200_000):
            self.conn.execute("BEGIN")
            self.conn.executemany(sql, chunk)
            self.conn.execute("COMMIT")
            count += len(chunk)
        return count

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, tuple(params)).fetchall())

    def secondary_indexes(self, tables: Sequence[str]) -> list[tuple[str, str]]:
        marks = ", ".join("?" for _ in tables)
        rows = self.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "  # noqa: S608
            f"AND sql NOT LIKE 'CREATE UNIQUE%' AND tbl_name IN ({marks})",
            tables,
        )
        return [(str(n), str(s)) for n, s in rows]

    def analyze(self) -> None:
        pass  # tapevault never runs ANALYZE on SQLite; neither does a vault that grew by itself

    def close(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_field(value: Any) -> str:
    """One field in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPE)
    return str(value)


def copy_text(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows in COPY text format: ``copy_field`` for each value, with its two commonest cases (a
    string, an int) inline, as they are tens of millions of calls in a full fill (and a string
    translated only when it holds what COPY escapes: ``translate`` costs a microsecond)."""
    esc, null = _COPY_ESCAPE, "\\N"
    lines = [
        "\t".join(
            [
                (v if v.isprintable() and "\\" not in v else v.translate(esc))
                if type(v) is str
                else str(v)
                if type(v) is int
                else null
                if v is None
                else copy_field(v)
                for v in r
            ]
        )
        for r in rows
    ]
    lines.append("")
    return "\n".join(lines).encode()


class PgSink(Sink):
    name = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        self.conn.autocommit = True
        self.conn.execute("SET synchronous_commit = off")

    def put(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        from psycopg.copy import QueuedLibpqWriter

        count = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            # Queued: the rows are sent by psycopg's worker thread while this one formats the
            # next ones (the server ingests on the other core).
            writer = QueuedLibpqWriter(cur)
            with cur.copy(sql, writer=writer) as copy:  # type: ignore[arg-type]
                for chunk in _chunked(rows, 20_000):
                    copy.write(copy_text(chunk))
                    count += len(chunk)
        return count

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []

    def secondary_indexes(self, tables: Sequence[str]) -> list[tuple[str, str]]:
        rows = self.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.schemaname = 'public' AND i.tablename = ANY(%s) "
            "AND i.indexdef NOT LIKE 'CREATE UNIQUE%%'",
            [list(tables)],
        )
        return [(str(n), str(s)) for n, s in rows]

    def analyze(self) -> None:
        self.conn.execute("ANALYZE")

    def close(self) -> None:
        self.conn.close()


def open_sink(database_url: str) -> Sink:
    if database_url.startswith("sqlite:///"):
        return SqliteSink(Path(database_url.removeprefix("sqlite:///")))
    return PgSink(database_url)


# --- the history ----------------------------------------------------------------------------------

_AGENTS = (
    "SukiSDK/3.2 (iOS 17.4)",
    "okhttp/4.12.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0",
    "python-httpx/0.27.0",
    "KoreBot/1.0",
)
_BIG_TABLES = ("sessions", "recordings", "audit_log")


class Filler:
    """See the module docstring. ``pinned``: tenants made beforehand through the CLI (the first
    is the biggest, the second the median one), given their share of the history."""

    def __init__(
        self,
        sink: Sink,
        database_url: str,
        plan: Plan,
        key_path: Path,
        pinned: Sequence[str] = (),
        *,
        now_ms: int | None = None,
        drop_indexes: bool = False,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.sink = sink
        self.database_url = database_url
        self.plan = plan
        self.key_path = key_path
        self.pinned = list(pinned)
        self.now = now_ms if now_ms is not None else int(time.time() * 1000)
        self.start = self.now - SPAN_MS
        self.drop_indexes = drop_indexes
        self.log = log
        self.rng = random.Random(plan.seed)
        self.out = Filled(plan)
        p = plan
        # Recordings are numbered in creation order, spread evenly over the span; those created
        # before ``expired_before`` are past retention, before ``purged_before`` also purged.
        self.expired_before = self.start + SPAN_MS * (p.expired + p.purged) // p.recordings
        self.purged_before = self.start + SPAN_MS * p.purged // p.recordings
        self.retention_ms = self.now - self.expired_before
        self.tenant_of_session = array("H")
        self.session_of_recording = array("I")
        self.session_first_recording = array("I")  # per session: its first recording's number

    # - names

    def tenant(self, n: int) -> str:
        return self.pinned[n] if n < len(self.pinned) else tenant_id(n)

    def rec_created(self, r: int) -> int:
        return self.start + SPAN_MS * r // self.plan.recordings

    # - the steps

    def run(self) -> Filled:
        started = time.monotonic()
        dropped: list[tuple[str, str]] = []
        if self.drop_indexes:
            dropped = self.sink.secondary_indexes(_BIG_TABLES)
            for name, _ in dropped:
                self.sink.execute(f'DROP INDEX "{name}"')
        self._timed("tenants", self._tenants)
        self._timed("sessions", self._sessions)
        self._timed("recordings", self._recordings)
        self._timed("access_log", self._access_log)
        if dropped:
            t = time.monotonic()
            for _, create in dropped:
                self.sink.execute(create)
            self.out.seconds["indexes"] = time.monotonic() - t
        t = time.monotonic()
        self.sink.analyze()
        self.out.seconds["analyze"] = time.monotonic() - t
        self.out.seconds["total"] = time.monotonic() - started
        return self.out

    def _timed(self, name: str, step: Callable[[], int]) -> None:
        t = time.monotonic()
        self.out.counts[name] = step()
        self.out.seconds[name] = time.monotonic() - t
        self.log(f"{name}: {self.out.counts[name]} rows in {self.out.seconds[name]:.1f} s")

    def _tenants(self) -> int:
        p = self.plan
        rows, keys = [], []
        for n in range(len(self.pinned), p.tenants):
            t = tenant_id(n)
            rows.append(
                (
                    t,
                    f"Tenant {n}",
                    os.urandom(24).hex(),
                    self.retention_ms // 1000,
                    self.start - DAY_MS,
                    f"{t[:8]}-{t[8:12]}-4{t[13:16]}-a{t[17:20]}-{t[20:32]}",
                    f"st-{t}",
                    f"cs-{t}",
                    os.urandom(24).hex(),
                    True,
                    "gateway",
                )
            )
            key = (f"g{n:015x}", t, "tvk_" + t[:6], os.urandom(32).hex(), "initial", "admin")
            keys.append((*key, self.start))
        columns = (
            "partner_id",
            "name",
            "jwt_secret",
            "retention_seconds",
            "created_ms",
            "workspace_id",
            "bot_id",
            "kore_client_id",
            "kore_client_secret",
            "recording_enabled",
            "delivery",
        )
        count = self.sink.put("partners", columns, rows)
        self.sink.put(
            "api_keys",
            ("key_id", "partner_id", "prefix", "key_hash", "name", "role", "created_ms"),
            keys,
        )
        # The pinned tenants keep their credentials but take the history's retention.
        for t in self.pinned:
            self.sink.execute(
                "UPDATE partners SET retention_seconds = ? WHERE partner_id = ?",
                (self.retention_ms // 1000, t),
            )
        return count

    def _sessions(self) -> int:
        p = self.plan
        # Zipf's law over tenants: tenant 0 the biggest, the pinned second one at the median.
        weights = [1.0 / (k + 1) for k in range(p.tenants)]
        order = list(range(p.tenants))
        if len(self.pinned) > 1 and p.tenants > 2:
            median = p.tenants // 2
            order[1], order[median] = order[median], order[1]
        ranked = [0.0] * p.tenants
        for rank, tenant in enumerate(order):
            ranked[tenant] = weights[rank]
        rng = self.rng
        choose = rng.choices
        tenants = choose(range(p.tenants), weights=ranked, k=p.sessions)
        self.tenant_of_session = array("H", tenants)
        self.out.big_tenant = self.tenant(0)
        self.out.typical_tenant = self.tenant(1 if len(self.pinned) > 1 else order[p.tenants // 2])
        # Recordings per session: 1 to 9 around the plan's mean, numbered in session order.
        mean = p.recordings / p.sessions
        first = array("I")
        at = 0
        for s in range(p.sessions):
            first.append(at)
            remaining_s = p.sessions - s
            left = p.recordings - at
            k = (
                left
                if remaining_s == 1
                else max(1, min(left - (remaining_s - 1), round(rng.uniform(0.2, 1.8) * mean)))
            )
            at += k
        first.append(p.recordings)
        self.session_first_recording = first
        sor = array("I", bytes(4 * p.recordings))
        for s in range(p.sessions):
            for r in range(first[s], first[s + 1]):
                sor[r] = s
        self.session_of_recording = sor
        held = set(rng.sample(range(p.sessions), max(1, p.sessions // 1000)))

        def rows() -> Iterator[tuple[Any, ...]]:
            for s in range(p.sessions):
                created = self.rec_created(first[s]) - 1000
                last = self.rec_created(first[s + 1] - 1)
                call = s % 10 == 0
                hold = s in held
                yield (
                    session_id(s),
                    self.tenant(tenants[s]),
                    "call" if call else "ambient",
                    "completed",
                    created,
                    last + 60_000,
                    f"CA{_scramble(s, 9):032x}" if call else None,
                    None if call else f"dr-{s % 997}",
                    "litigation" if hold else None,
                    "compliance" if hold else None,
                    created + DAY_MS if hold else None,
                )

        return self.sink.put(
            "sessions",
            (
                "session_id",
                "partner_id",
                "kind",
                "status",
                "created_ms",
                "ended_ms",
                "external_id",
                "provider_id",
                "hold_reason",
                "hold_by",
                "hold_set_ms",
            ),
            rows(),
        )

    def _recordings(self) -> int:
        p = self.plan
        first = self.session_first_recording
        sor = self.session_of_recording
        tos = self.tenant_of_session
        rng = self.rng
        retention = self.retention_ms
        purged_before = self.purged_before

        def rows() -> Iterator[tuple[Any, ...]]:
            for r in range(p.recordings):
                s = sor[r]
                sid = session_id(s)
                partner = self.tenant(tos[s])
                rid = recording_id(r)
                created = self.rec_created(r)
                duration = 30_000 + (r * 7919) % 1_200_000
                stereo = s % 10 == 0
                channel = None
                if stereo:  # a call: inbound and outbound, mono each
                    channel = ("inbound", "outbound", None)[min(2, r - first[s])]
                    stereo = False
                channels = 2 if r % 5 == 0 and channel is None else 1
                expires = created + retention
                gone = created < purged_before
                yield (
                    rid,
                    sid,
                    partner,
                    r - first[s] + 1,
                    "expired" if gone else "available",
                    f"{partner}/{sid}/{rid}.wav",
                    16000,
                    channels,
                    16,
                    duration,
                    44 + duration * 32 * channels,
                    f"{_scramble(r, 3):016x}" * 4,
                    created,
                    expires,
                    "wav",
                    False,
                    channel,
                    "tenant",
                    expires + rng.randrange(60_000, 3_600_000) if gone else None,
                    "expired" if gone else None,
                    expires + 3_700_000 if gone else None,
                )

        return self.sink.put(
            "recordings",
            (
                "recording_id",
                "session_id",
                "partner_id",
                "sequence_number",
                "status",
                "storage_key",
                "sample_rate",
                "channels",
                "bits_per_sample",
                "duration_ms",
                "size_bytes",
                "sha256",
                "created_ms",
                "expires_ms",
                "source_format",
                "recovered",
                "channel",
                "retention_policy",
                "purged_ms",
                "purge_reason",
                "removed_ms",
            ),
            rows(),
        )

    # - the access log

    def _access_log(self) -> int:
        p = self.plan
        engine = make_engine(self.database_url)
        try:
            state = SqlAuditStore(engine).tree_state()
        finally:
            engine.dispose()
        if not state.tree_current:
            raise RuntimeError("the access log's tree is still being backfilled; fill later")
        signer = load_or_create_signer(self.key_path)
        appender = merkle.Appender(state.tree_size, state.edge)
        gen = _Records(self, state.head_seq, state.head_hash, appender, signer)
        count = 0
        for rows, nodes in gen.chunks(p.records, 50_000):
            count += self.sink.put("audit_log", ROW_COLUMNS, rows)
            self.sink.put("audit_tree", ("level", "idx", "hash"), nodes)
            gen.nodes += len(nodes)
        self.sink.put("audit_checkpoints", _CHECKPOINT_COLUMNS, gen.checkpoints)
        moved = self.sink.execute(
            "UPDATE audit_state SET head_seq = ?, head_hash = ?, tree_size = ? "
            "WHERE id = 1 AND head_seq = ? AND tree_size = ? RETURNING id",
            (gen.seq, gen.prev, appender.size, state.head_seq, state.tree_size),
        )
        if not moved:
            raise RuntimeError("the access log moved during the fill (was a server running?)")
        self.out.counts["tree_nodes"] = gen.nodes
        self.out.counts["checkpoints"] = len(gen.checkpoints)
        self.out.head_seq = gen.seq
        self.out.hot_recording = gen.hot
        return count


_CHECKPOINT_COLUMNS = (
    "size",
    "head_hash",
    "at_ms",
    "key_id",
    "signature",
    "tree_size",
    "root_hash",
    "note_signature",
)


class _Records:
    """The access records, chained and added to the tree as they are produced, in chunks (each
    with the tree nodes its records completed), and a signed checkpoint every
    ``CHECKPOINT_EVERY`` records and at the end."""

    def __init__(
        self,
        filler: Filler,
        head_seq: int,
        head_hash: str,
        appender: merkle.Appender,
        signer: CheckpointSigner,
    ) -> None:
        self.f = filler
        self.seq = head_seq
        self.prev = head_hash
        self.appender = appender
        self.signer = signer
        self.checkpoints: list[tuple[Any, ...]] = []
        self.nodes = 0
        self.hot = ""

    def chunks(
        self, total: int, size: int
    ) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[int, int, bytes]]]]:
        rows: list[tuple[Any, ...]] = []
        for row in self.rows(total):
            rows.append(row)
            if len(rows) >= size:
                nodes, self.appender.new = self.appender.new, []
                yield rows, nodes
                rows = []
        nodes, self.appender.new = self.appender.new, []
        yield rows, nodes

    def rows(self, total: int) -> Iterator[tuple[Any, ...]]:
        """The audit_log rows, in seq order (the tree's new nodes gather in the appender)."""
        f = self.f
        p = f.plan
        rng = random.Random(p.seed + 1)
        rand = rng.random
        sor, tos = f.session_of_recording, f.tenant_of_session
        start, span = f.start, SPAN_MS
        n_rec = p.recordings
        appender = self.appender
        append = appender.append
        leaf = merkle.leaf_hash
        sha = hashlib.sha256
        seq, prev = self.seq, self.prev
        ips = [f"10.{i % 7}.{(i * 37) % 256}.{(i * 101) % 256}" for i in range(64)]
        big = f.out.big_tenant
        names = [f.tenant(n) for n in range(p.tenants)]
        hot_r = -1
        dumps, SORTED, agents = orjson.dumps, orjson.OPT_SORT_KEYS, _AGENTS
        for i in range(total):
            at = start + span * i // total + 1000
            # A recording that existed then, recent ones far more often.
            cur = max(1, n_rec * (at - start) // span)
            r = cur - 1 - int(cur * rand() ** 4)
            s = sor[r]
            tenant = names[tos[s]]
            roll = rand()
            sid = session_id(s)
            if roll < 0.6:
                action, rec, mode = "media.playback", recording_id(r), "stream"
                size = 44 + (30_000 + (r * 7919) % 1_200_000) * 32
                a = int(rand() * size) & ~1023
                ranges: tuple[tuple[int, int], ...] = ((a, min(size - 1, a + 1_048_575)),)
                sent = ranges[0][1] - a + 1
                actor_kind, actor = "signed_url", f"url:{r % 4096:03x}"
                detail: dict[str, Any] | None = None
                if tenant == big and hot_r < 0 and i > total * 0.9:
                    hot_r = r
            elif roll < 0.85:
                action, rec, mode, ranges, sent = "recording.urls_issue", None, None, (), 0
                actor_kind, actor, detail = "suki_token", f"jti-{int(rand() * 1e9):08x}", None
            elif roll < 0.95:
                action, rec, mode, ranges, sent = "session.read", None, None, (), 0
                actor_kind, actor, detail = "api_key", f"key:{tenant[:8]}", None
            else:
                action, rec, mode, ranges, sent = "session.list", None, None, (), 0
                actor_kind, actor, detail = "api_key", f"key:{tenant[:8]}", {"filters": {}}
                sid = None
            seq += 1
            # The entry as ``entry_json`` stores it (AuditEntry's fields, in order), then the
            # canonical bytes ``core/audit.py`` hashes: the same fields with seq and prev_hash,
            # keys sorted. Built here without the AuditEntry and its checks (the values are ours
            # and plain): a quarter of the fill's time. ``test_growth`` holds every row to
            # ``canonical_bytes`` and ``entry_json``.
            doc = {
                "at_ms": at,
                "action": action,
                "status": 206 if ranges else 200,
                "tenant_id": tenant,
                "actor_kind": actor_kind,
                "actor_id": actor,
                "provider_id": f"dr-{s % 997}" if actor_kind == "suki_token" else None,
                "session_id": sid,
                "recording_id": rec,
                "mode": mode,
                "ranges": ranges,
                "bytes_sent": sent,
                "error": None,
                "client_ip": ips[i & 63],
                "user_agent": agents[i % 5],
                "request_id": f"{_scramble(seq, 5):016x}",
                "detail": detail,
            }
            stored = dumps(doc).decode()
            doc["seq"] = seq
            doc["prev_hash"] = prev
            data = dumps(doc, option=SORTED)
            digest = sha(data).hexdigest()
            append(leaf(data))
            yield (seq, at, tenant, action, actor, sid, rec, stored, prev, digest)
            prev = digest
            if seq % CHECKPOINT_EVERY == 0 or i == total - 1:
                self.seq, self.prev = seq, prev
                self._checkpoint(at)
        self.seq, self.prev = seq, prev
        self.hot = recording_id(hot_r) if hot_r >= 0 else ""

    def _checkpoint(self, at_ms: int) -> None:
        root = self.appender.root().hex()
        cp = self.signer.sign(self.seq, self.prev, at_ms, tree=(self.appender.size, root))
        self.checkpoints.append(
            (
                cp.size,
                cp.head_hash,
                cp.at_ms,
                cp.key_id,
                cp.signature,
                cp.tree_size,
                cp.root_hash,
                cp.note_signature,
            )
        )
