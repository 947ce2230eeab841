"""The lineage index: checkpoints' lineage cards by digest, and their derivations for recursive queries.

Two backends with one schema (``SCHEMA_VERSION``, migrated in place, recorded in ``p4t_schema``):

* **SQLite** (the default): ``<store>/.lineage/index.sqlite``, in WAL mode with a busy timeout -- one machine,
  many ranks and runs writing at once;
* **PostgreSQL**, for a team's shared index: ``PROV4TORCH_INDEX=postgresql://user@host/db`` (or the CLI's
  ``--index``), through ``psycopg`` 3 (the ``postgres`` extra).

Tables: ``cards(digest, model, card, envelope)`` -- a card under each digest of its checkpoint (file, weights,
root), with the signed envelope it was written in; ``derivations(down, up)`` -- every derivation a card states
(its own and those inherited from its base models), so ``upstream`` is one recursive SQL query on either
backend. The store's PROV files stay the source of truth: ``prov4torch index rebuild`` fills either backend from
them. Every failure of a backend is a ``ConfigError`` naming the index and what to do (the recorder warns once
and goes on; a later ``index rebuild`` fills what was missed).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import env
from ..errors import ConfigError, MissingExtraError
from ..remote import redact
from ..safefs import safe_dir

CARD_DIR = ".lineage"
INDEX = "index.sqlite"
SCHEMA_VERSION = 2
CONNECT_TIMEOUT_S = 5
_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)

# version -> statements taking the schema there from the one before (version 0: an index written before the
# schema was versioned, possibly without the envelope column); each step runs in one transaction
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("CREATE TABLE IF NOT EXISTS cards (digest TEXT PRIMARY KEY, model TEXT, card TEXT, envelope TEXT)",),
    2: ("CREATE TABLE IF NOT EXISTS derivations (down TEXT NOT NULL, up TEXT NOT NULL, PRIMARY KEY (down, up))",
        "CREATE INDEX IF NOT EXISTS cards_model ON cards (model)"),
}
UPSERT_CARD = ("INSERT INTO cards (digest, model, card, envelope) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO "
               "UPDATE SET model = excluded.model, card = excluded.card, envelope = excluded.envelope")
INSERT_EDGE = "INSERT INTO derivations (down, up) VALUES (?, ?) ON CONFLICT DO NOTHING"
# what ``start`` derives from, transitively (UNION: each id once, so a cycle in a foreign store ends)
UPSTREAM = ("WITH RECURSIVE up(id) AS (SELECT up FROM derivations WHERE down = ? UNION "
            "SELECT d.up FROM derivations d JOIN up ON d.down = up.id) SELECT id FROM up ORDER BY id")


def card_keys(card: Mapping[str, Any]) -> list[str]:
    """Every digest a checkpoint can be found by: its file, its weights, its root digest."""
    return [str(k) for k in dict.fromkeys([card.get("sha256"), *card.get("keys", [])]) if k]


def _edges(card: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for pair in card.get("derivations", []) or []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair):
            out.append((pair[0], pair[1]))
    return out


def _card_rows(card: Mapping[str, Any], envelope: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
    text = json.dumps(card, sort_keys=True)
    env_text = json.dumps(envelope, sort_keys=True) if envelope is not None else None
    return [(k, str(card.get("model")), text, env_text) for k in card_keys(card)]


class _Backend:
    """One database: connect, run SQL written with ``?`` placeholders, migrate to ``SCHEMA_VERSION``."""

    where = ""
    errors: tuple[type[BaseException], ...] = ()

    def connect(self, create: bool) -> Any:
        raise NotImplementedError

    def begin(self, con: Any, write: bool) -> contextlib.AbstractContextManager[Any]:
        """One transaction (``write``: taking the write lock at once, so concurrent writers queue)."""
        raise NotImplementedError

    def fail(self, exc: BaseException) -> ConfigError:
        raise NotImplementedError

    def sql(self, text: str) -> str:
        return text

    def lock(self, con: Any) -> None:
        """Serialise migrations between processes (inside the migration's transaction)."""

    def release(self, con: Any) -> None:
        con.close()

    @contextlib.contextmanager
    def transaction(self, create: bool, migrate: bool | None = None) -> Iterator[Any]:
        """A connection in one transaction (``create``: the index made if missing, else None when there is
        none), the schema brought up to date first (``migrate``, default ``create``); backend errors become
        ``ConfigError``."""
        try:
            con = self.connect(create)
            if con is None:
                yield None
                return
            try:
                if create if migrate is None else migrate:
                    self.migrate(con)
                with self.begin(con, write=create):
                    yield con
            finally:
                self.release(con)
        except self.errors as exc:
            raise self.fail(exc) from None

    def current(self, con: Any) -> int:
        """The schema's version, read without a write lock (-1: not versioned yet)."""
        try:
            with self.begin(con, write=False):
                row = con.execute("SELECT MAX(version) FROM p4t_schema").fetchone()
        except self.errors:
            return -1
        return int(row[0]) if row and row[0] is not None else -1

    def version(self, con: Any) -> int:
        con.execute("CREATE TABLE IF NOT EXISTS p4t_schema (version INTEGER NOT NULL)")
        row = con.execute("SELECT MAX(version) FROM p4t_schema").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def migrate(self, con: Any) -> None:
        """Take the schema to ``SCHEMA_VERSION``, step by step, in one transaction: two processes migrating at
        once -- one waits, then finds it done."""
        if self.current(con) >= SCHEMA_VERSION:
            return  # the common case: one read, no write lock
        with self.begin(con, write=True):
            self.lock(con)
            current = self.version(con)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    con.execute(statement)
                self.after(con, version)
                con.execute(self.sql("INSERT INTO p4t_schema (version) VALUES (?)"), (version,))

    def after(self, con: Any, version: int) -> None:
        """Data steps of a migration: the derivations of the cards already stored (2)."""
        if version == 2:
            rows = con.execute("SELECT card FROM cards").fetchall()
            edges = {e for (text,) in rows for e in _edges(_loads(text))}
            if edges:
                con.cursor().executemany(self.sql(INSERT_EDGE), sorted(edges))


def _loads(text: Any) -> dict[str, Any]:
    try:
        card = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


class _Sqlite(_Backend):
    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def connect(self, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.is_file():
            return None
        if create:
            safe_dir(self.path.parent.parent, self.path.parent.name)
        if self.path.is_symlink():
            raise ConfigError(f"{self.path} is a link: prov4torch does not write through links")
        if os.path.lexists(self.path) and not self.path.is_file():
            raise ConfigError(f"{self.path} is not a file (a directory or a special file): move it aside and run "
                              "prov4torch index rebuild again")
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions are ours (begin)
        if create:
            with contextlib.suppress(sqlite3.Error):  # WAL: readers never block the writers of other ranks
                con.execute("PRAGMA journal_mode=WAL")
        return con

    @contextlib.contextmanager
    def begin(self, con: Any, write: bool) -> Iterator[Any]:
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def after(self, con: Any, version: int) -> None:
        # an index written before cards were signed has no envelope column
        if version == 1 and "envelope" not in {row[1] for row in con.execute("PRAGMA table_info(cards)")}:
            con.execute("ALTER TABLE cards ADD COLUMN envelope TEXT")
        super().after(con, version)

    def fail(self, exc: BaseException) -> ConfigError:
        return ConfigError(f"{self.path}: {exc} (not a usable SQLite index); move it aside and run "
                           "prov4torch index rebuild again")


_CONNECTIONS: dict[tuple[int, str], Any] = {}  # (pid, url) -> an idle PostgreSQL connection of this process
_MIGRATED: set[tuple[int, str]] = set()


def _close_connections() -> None:
    """At exit: this process's own connections closed. A forked child's inherited ones share the parent's
    sockets: closing one would end the parent's session, so they are left alone (psycopg, too, finishes a
    connection on collection only in the process that opened it)."""
    for (pid, _url), con in list(_CONNECTIONS.items()):
        if pid == os.getpid():
            with contextlib.suppress(Exception):
                con.close()
    _CONNECTIONS.clear()


atexit.register(_close_connections)


class _Postgres(_Backend):
    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise MissingExtraError("a PostgreSQL lineage index needs psycopg 3: pip install "
                                    "'prov4torch[postgres]'") from None
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.url = url
        self.where = redact(url)

    def connect(self, create: bool) -> Any:
        """This process's connection to the database, kept between calls (a rank saving a checkpoint every few
        steps would otherwise pay a server process per card); a new one after a fork or a broken one."""
        key = (os.getpid(), self.url)
        con = _CONNECTIONS.pop(key, None)
        if con is not None and not con.closed and not con.broken:
            return con
        return self.psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)

    def release(self, con: Any) -> None:
        if con.closed or con.broken or con.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE:
            con.close()
            return
        old = _CONNECTIONS.pop((os.getpid(), self.url), None)
        if old is not None:
            old.close()
        _CONNECTIONS[(os.getpid(), self.url)] = con

    def migrate(self, con: Any) -> None:
        if (os.getpid(), self.url) not in _MIGRATED:  # once per process and database
            super().migrate(con)
            _MIGRATED.add((os.getpid(), self.url))

    def begin(self, con: Any, write: bool) -> contextlib.AbstractContextManager[Any]:
        return con.transaction()  # type: ignore[no-any-return]

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def lock(self, con: Any) -> None:
        con.execute("SELECT pg_advisory_xact_lock(7041974)")  # CREATE TABLE IF NOT EXISTS races between sessions

    def fail(self, exc: BaseException) -> ConfigError:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ConfigError(f"{self.where}: {first} (the PostgreSQL lineage index); check PROV4TORCH_INDEX / "
                           "--index, or run prov4torch index rebuild once it is reachable")


def backend_for(root: Path, url: str | None = None) -> _Backend:
    """The index a store uses: ``url`` (or ``PROV4TORCH_INDEX``) when given, else the store's SQLite file."""
    url = url if url is not None else env.get(env.INDEX)
    if url:
        if not _URL.match(url):
            raise ConfigError(f"{env.INDEX}={redact(url)!r}: not a PostgreSQL URL (postgresql://user@host/db); "
                              "leave it unset for the store's own SQLite index")
        return _Postgres(url)
    return _Sqlite(root / CARD_DIR / INDEX)


class LineageIndex:
    """A store's lineage index (``backend_for``): cards by digest, derivations for ``upstream``."""

    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = root
        self.backend = backend_for(root, url)
        self.where = self.backend.where

    def put(self, card: Mapping[str, Any], envelope: Mapping[str, Any] | None = None) -> None:
        """Store a card under each of its digests, with the signed envelope it was written in (if any), and its
        derivations. Raises ``ConfigError`` when the index cannot be written."""
        b = self.backend
        with b.transaction(create=True) as con:
            con.cursor().executemany(b.sql(UPSERT_CARD), _card_rows(card, envelope))
            edges = _edges(card)
            if edges:
                con.cursor().executemany(b.sql(INSERT_EDGE), edges)

    def get(self, *digests: str | None) -> dict[str, Any] | None:
        """The card stored under the first of ``digests`` found; None when none is (or the index cannot be read:
        the other sources of lineage are read then, and combined restrictively)."""
        b = self.backend
        try:
            with b.transaction(create=False) as con:
                if con is None:
                    return None
                for d in digests:
                    if d:
                        row = con.execute(b.sql("SELECT card FROM cards WHERE digest = ?"), (d,)).fetchone()
                        if row:
                            return _loads(row[0]) or None
        except (ConfigError, OSError):
            return None
        return None

    def upstream(self, start: str) -> list[str]:
        """Everything ``start`` (a model id, or any digest of a checkpoint) derives from, transitively: one
        recursive query."""
        b = self.backend
        with b.transaction(create=False, migrate=True) as con:
            if con is None:
                raise ConfigError(f"{self.where}: no lineage index there: run prov4torch index rebuild on the "
                                  "store (the output root of your runs)")
            row = con.execute(b.sql("SELECT model FROM cards WHERE digest = ?"), (start,)).fetchone()
            model = str(row[0]) if row else start
            return [str(r[0]) for r in con.execute(b.sql(UPSTREAM), (model,)).fetchall()]

    def replace(self, cards: Sequence[Mapping[str, Any]]) -> int:
        """Replace every card (``index rebuild``): one transaction, so readers see the old index or the new."""
        b = self.backend
        with b.transaction(create=True) as con:
            con.execute("DELETE FROM cards")
            con.execute("DELETE FROM derivations")
            con.cursor().executemany(b.sql(UPSERT_CARD), [r for c in cards for r in _card_rows(c, None)])
            con.cursor().executemany(b.sql(INSERT_EDGE), sorted({e for c in cards for e in _edges(c)}))
        with b.transaction(create=False) as con:  # the planner's statistics for the new content: the recursive
            con.execute("ANALYZE")                # query uses the (down, up) key, not a scan of every row
        return len(cards)

    def counts(self) -> tuple[int, int]:
        """(cards, derivations) stored."""
        with self.backend.transaction(create=False, migrate=True) as con:
            if con is None:
                return 0, 0
            cards = con.execute("SELECT COUNT(DISTINCT model) FROM cards").fetchone()[0]
            edges = con.execute("SELECT COUNT(*) FROM derivations").fetchone()[0]
        return int(cards), int(edges)
