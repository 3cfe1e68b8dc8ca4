"""The sqlite index of a context: derived from the manifests, rebuilt from them at will."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from disdat_luigi.errors import IndexDamaged, InvalidName
from disdat_luigi.store.manifest import BundleManifest
from disdat_luigi.store.names import is_glob

SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    processing_name TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    root_task INTEGER NOT NULL DEFAULT 0,
    code_version TEXT
);
CREATE INDEX IF NOT EXISTS bundles_name ON bundles (name, created_us);
CREATE INDEX IF NOT EXISTS bundles_processing ON bundles (processing_name, created_us);
CREATE INDEX IF NOT EXISTS bundles_created ON bundles (created_us);
CREATE TABLE IF NOT EXISTS tags (
    uuid TEXT NOT NULL REFERENCES bundles (uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (uuid, key)
);
CREATE INDEX IF NOT EXISTS tags_key_value ON tags (key, value);
CREATE TABLE IF NOT EXISTS dependencies (
    uuid TEXT NOT NULL REFERENCES bundles (uuid) ON DELETE CASCADE,
    dep_uuid TEXT NOT NULL,
    dep_name TEXT NOT NULL,
    arg_name TEXT
);
CREATE INDEX IF NOT EXISTS dependencies_uuid ON dependencies (uuid);
CREATE INDEX IF NOT EXISTS dependencies_dep ON dependencies (dep_uuid);
PRAGMA user_version = 1;
"""
SCHEMA_VERSION = 1
COLUMNS = "uuid, name, processing_name, created_us, committed, root_task, code_version"
BATCH = 500


@dataclass(frozen=True)
class BundleQuery:
    """What `search` asks for; names match exactly unless they hold a '*' or '?' glob."""

    name: str | None = None
    processing_name: str | None = None
    uuid: str | None = None
    tags: Mapping[str, str] | None = None
    committed: bool | None = None
    intermediates: bool = False
    roots: bool = False
    before: datetime | None = None
    after: datetime | None = None
    limit: int | None = None
    newest_per_name: bool = False  # only the newest match of each name


@dataclass(frozen=True)
class IndexRow:
    uuid: str
    name: str
    processing_name: str
    created_us: int
    committed: bool
    root_task: bool
    code_version: str | None = None

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> IndexRow:
        code_version = None if row[6] is None else str(row[6])
        return cls(str(row[0]), str(row[1]), str(row[2]), int(row[3]), bool(row[4]), bool(row[5]), code_version)


DATE_FORMATS = ("%m-%d-%Y", "%m-%d-%Y %H:%M:%S")


def parse_date(text: str | datetime) -> datetime:
    """ISO 8601, or Disdat's '12-31-2020' / '12-31-2020 13:40:30' (local time when no zone)."""
    if isinstance(text, datetime):
        return text
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        pass
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except (TypeError, ValueError):
            continue
    raise InvalidName(
        f"cannot read the date {text!r}", hint="use 2020-12-31, '2020-12-31 13:40:30' or Disdat's 12-31-2020"
    )


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.astimezone()
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds


class BundleIndex:
    """One sqlite file in WAL mode; one connection per process (reopened after a fork)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"])  # type: ignore[misc, arg-type]

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            try:
                conn = self._open()
            except sqlite3.DatabaseError as err:
                if isinstance(err, sqlite3.OperationalError) and not _read_only(err):
                    raise
                if not _read_only(err):
                    raise IndexDamaged(
                        f"the index {self.path} is damaged ({err})",
                        hint="run `dsdt verify --rebuild`: it moves the file aside and rebuilds it from the bundles",
                    ) from err
                # a read-only store (mount, snapshot): nobody can change it, so read it as immutable
                conn = sqlite3.connect(
                    f"file:{self.path}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
                )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")  # waits out other writers' transactions
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with _transaction(conn):
                    for statement in _statements(SCHEMA):
                        conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def move_aside(self) -> Path:
        """Rename a damaged index file out of the way (kept for inspection); its new path."""
        self.close()
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return aside

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def insert(self, manifest: BundleManifest, committed: bool) -> None:
        self.insert_many([(manifest, committed)])

    def insert_many(self, entries: Iterable[tuple[BundleManifest, bool]]) -> None:
        """Index bundles in one transaction: all of them or none."""
        with _transaction(self.conn) as conn:
            for manifest, committed in entries:
                _insert(conn, manifest, committed)

    def replace_all(self, entries: Iterable[tuple[BundleManifest, bool]]) -> None:
        """Swap the whole content for `entries` in one transaction (rebuild)."""
        with _transaction(self.conn) as conn:
            conn.execute("DELETE FROM bundles")
            for manifest, committed in entries:
                _insert(conn, manifest, committed)

    def delete(self, uuids: Iterable[str]) -> None:
        with _transaction(self.conn) as conn:
            conn.executemany("DELETE FROM bundles WHERE uuid = ?", [(u,) for u in uuids])

    def set_committed(self, uuid: str) -> None:
        with _transaction(self.conn) as conn:
            conn.execute("UPDATE bundles SET committed = 1 WHERE uuid = ?", (uuid,))

    def uuids(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT uuid FROM bundles")}

    def is_empty(self) -> bool:
        return self.conn.execute("SELECT 1 FROM bundles LIMIT 1").fetchone() is None

    def newest_by_recipe(self, processing_names: Iterable[str]) -> dict[tuple[str, str], IndexRow]:
        """For each (processing name, bundle name) the newest bundle, in a few batched queries."""
        found: dict[tuple[str, str], IndexRow] = {}
        for batch in _batches(list(processing_names)):
            marks = ",".join("?" * len(batch))
            sql = (
                f"SELECT {COLUMNS} FROM bundles WHERE processing_name IN ({marks}) ORDER BY created_us DESC, uuid DESC"
            )
            for row in self.conn.execute(sql, batch):
                found.setdefault((row[2], row[1]), IndexRow.of(row))
        return found

    def rows(self, uuids: Iterable[str]) -> dict[str, IndexRow]:
        found: dict[str, IndexRow] = {}
        for batch in _batches(list(uuids)):
            sql = f"SELECT {COLUMNS} FROM bundles WHERE uuid IN ({','.join('?' * len(batch))})"
            found.update((row[0], IndexRow.of(row)) for row in self.conn.execute(sql, batch))
        return found

    def tags_of_many(self, uuids: Iterable[str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for batch in _batches(list(uuids)):
            sql = f"SELECT uuid, key, value FROM tags WHERE uuid IN ({','.join('?' * len(batch))})"
            for uuid, key, value in self.conn.execute(sql, batch):
                found.setdefault(uuid, {})[key] = value
        return found

    def dependencies_of_many(self, uuids: Iterable[str]) -> dict[str, dict[str, str]]:
        """uuid -> {argument name: upstream uuid}."""
        found: dict[str, dict[str, str]] = {}
        for batch in _batches(list(uuids)):
            sql = f"SELECT uuid, arg_name, dep_uuid FROM dependencies WHERE uuid IN ({','.join('?' * len(batch))})"
            for uuid, arg_name, dep_uuid in self.conn.execute(sql, batch):
                found.setdefault(uuid, {})[arg_name or dep_uuid] = dep_uuid
        return found

    def search(self, query: BundleQuery) -> list[IndexRow]:
        return list(self.iter_search(query))

    def iter_search(self, query: BundleQuery) -> Iterator[IndexRow]:
        """The rows of `search`, newest first, read from sqlite as they are consumed."""
        columns = ", ".join(f"b.{column}" for column in COLUMNS.split(", "))
        if query.newest_per_name:
            # for each name (read off the name index) its newest match, found through that index too
            where, args = _where(query, "n")
            newest = " AND ".join(["n.name = names.name", *where])
            sql = (
                f"SELECT {columns} FROM (SELECT DISTINCT name FROM bundles) names JOIN bundles b ON b.uuid = "
                f"(SELECT n.uuid FROM bundles n WHERE {newest} ORDER BY n.created_us DESC, n.uuid DESC LIMIT 1)"
            )
        else:
            where, args = _where(query, "b")
            sql = f"SELECT {columns} FROM bundles b" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY b.created_us DESC, b.uuid DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            args.append(query.limit)
        cursor = self.conn.execute(sql, args)
        try:
            while rows := cursor.fetchmany(BATCH):
                yield from map(IndexRow.of, rows)
        finally:
            with suppress(sqlite3.ProgrammingError):  # the connection was closed before the reader stopped
                cursor.close()


def _where(query: BundleQuery, alias: str) -> tuple[list[str], list[object]]:
    """SQL conditions on the bundles table named `alias`, and their arguments."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("name", query.name), ("processing_name", query.processing_name)):
        if value is not None:
            where.append(f"{alias}.{column} GLOB ?" if is_glob(value) else f"{alias}.{column} = ?")
            args.append(value)
    if query.uuid is not None:
        where.append(f"{alias}.uuid = ?")
        args.append(query.uuid)
    if query.committed is not None:
        where.append(f"{alias}.committed = ?")
        args.append(int(query.committed))
    if query.roots:
        where.append(f"{alias}.root_task = 1")
    if query.intermediates:
        # made by a task that was not the root: `add` and hand-made bundles (processing name =
        # name) are nobody's intermediates
        where.append(f"{alias}.root_task = 0 AND {alias}.processing_name != {alias}.name")
    if query.before is not None:
        where.append(f"{alias}.created_us <= ?")
        args.append(to_us(query.before))
    if query.after is not None:
        where.append(f"{alias}.created_us >= ?")
        args.append(to_us(query.after))
    for key, value in (query.tags or {}).items():
        where.append(f"EXISTS (SELECT 1 FROM tags t WHERE t.uuid = {alias}.uuid AND t.key = ? AND t.value = ?)")
        args.extend([key, value])
    return where, args


def _insert(conn: sqlite3.Connection, manifest: BundleManifest, committed: bool) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO bundles ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            manifest.uuid,
            manifest.name,
            manifest.processing_name,
            to_us(manifest.creation_date),
            int(committed),
            int(manifest.root_task),
            manifest.code_version,
        ),
    )
    conn.execute("DELETE FROM tags WHERE uuid = ?", (manifest.uuid,))
    conn.executemany("INSERT INTO tags VALUES (?, ?, ?)", [(manifest.uuid, k, v) for k, v in manifest.tags.items()])
    conn.execute("DELETE FROM dependencies WHERE uuid = ?", (manifest.uuid,))
    conn.executemany(
        "INSERT INTO dependencies VALUES (?, ?, ?, ?)",
        [(manifest.uuid, d.uuid, d.name, d.arg_name) for d in manifest.dependencies],
    )


def _read_only(err: sqlite3.DatabaseError) -> bool:
    text = str(err)
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL once; the switch can report BUSY without waiting, so retry it briefly."""
    for attempt in range(200):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == 199:
                raise
            time.sleep(0.05)


def _batches(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE so concurrent writers queue on the lock instead of failing mid-way."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
