"""Durable storage of the center: the :class:`Storage` interface and its SQLite implementation.

The authorization logic (:mod:`center.core`) and the ledger (:mod:`center.ledger`) talk only to
:class:`Storage`; :mod:`center.pg_storage` is the PostgreSQL implementation, and both create and
upgrade their tables from the one definition in :mod:`center.schema`.

Transactions.  Every change happens inside ``with storage.transaction():``.  The outermost block
is one durable database transaction (SQLite: ``BEGIN IMMEDIATE`` ... ``COMMIT`` with WAL and
``synchronous=FULL``, so ``COMMIT`` returning means the data is on disk).  Nested blocks are
savepoints: an exception inside one rolls back only that block.  That is what makes *group
commit* possible later: a server can open one outer block, run several authorizations inside it
(each its own savepoint, each rolled back alone on an internal error), commit once, and only then
send the responses.  ``BEGIN IMMEDIATE`` takes the write lock up front, so a read-check-write
sequence (balance check, then posting) can never interleave with another process's.

Concurrency.  Two errors tell the caller that a batch failed through no fault of its requests:
:class:`StorageConflict` (another writer got in the way: a deadlock, a serialization failure, a
concurrent insert of the same message key; deciding the batch again will succeed or find the
other writer's answer) and :class:`StorageUnavailable` (the database cannot be reached; answer
91 and try again later).  :meth:`Storage.lock_rows` lets a batch take its row locks up front in
one fixed order (SQLite's single writer lock makes it a no-op there).

Records are frozen dataclasses; fields holding secrets (PIN verification data) are ``repr=False``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from swipepay.center import schema
from swipepay.drivers.store.sqlite_file import is_busy
from swipepay.firmware_sim.errors import ConfigError, LocalError, SwipepayError

SCHEMA_VERSION = schema.LATEST


class StorageUnavailable(SwipepayError):
    """The database cannot be reached (refused, connection lost, server shutting down).

    Not the request's fault: the server answers 91 (issuer inoperative) so the terminal may try
    again later; the storage reconnects at the next transaction.
    """

    response_code = "91"
    exit_code = 5


class CommitOutcomeUnknown(StorageUnavailable):
    """The connection went while ``COMMIT`` was on its way: the server may or may not have
    committed.  No answer can be given honestly (an approval that did not stay, or a decline of
    a debit that did), so the server closes the batch's connections unanswered; each terminal
    retransmits (or reverses) and exactly-once finds the stored answer if the commit happened,
    or decides the request afresh if it did not."""


class StorageConflict(SwipepayError):
    """Another writer got in the way (deadlock, serialization failure, the same message key
    inserted concurrently).  Nothing of the transaction stayed: decide it again."""

    response_code = "96"


@dataclass(frozen=True)
class AccountRecord:
    account_id: str
    holder: str
    kind: str  # one of center.ledger.AccountKind
    currency: str


@dataclass(frozen=True)
class TerminalRecord:
    terminal_id: str
    merchant_id: str
    merchant_name: str
    kind: str  # "pos" | "atm"
    account_id: str  # merchant settlement account (POS) or the ATM's cash account

    def row(self) -> tuple[object, ...]:
        """The values in the ``terminals`` table's column order (both backends' INSERT)."""
        return (self.terminal_id, self.merchant_id, self.merchant_name, self.kind, self.account_id)


@dataclass(frozen=True)
class CardRecord:
    """An enrollment: card ↔ account ↔ phone public key ↔ DUKPT initial key ID."""

    pan: str
    expiry: str  # YYMM
    account_id: str
    phone_key: bytes  # 33-byte compressed P-256 point
    ikid: bytes  # 8-byte DUKPT Initial Key ID (BDK ID + derivation ID)
    last_ksn_counter: int  # 0 until the first PIN block is accepted (devices start at 1)
    pvd: bytes = field(repr=False)  # PIN verification data (center.pinverify)
    pin_tries: int = 0  # consecutive wrong PINs

    def row(self) -> tuple[object, ...]:
        """The values in the ``cards`` table's column order (both backends' INSERT)."""
        return (
            self.pan, self.expiry, self.account_id, self.phone_key, self.ikid,
            self.last_ksn_counter, self.pvd, self.pin_tries,
        )  # fmt: skip


@dataclass(frozen=True)
class HoldRecord:
    """Funds reserved by a pre-authorization; ``reference`` is the pre-auth's message key."""

    reference: str
    account_id: str
    amount: int
    active: bool


@dataclass(frozen=True)
class MessageKey:
    """What identifies one request for retransmission handling (hardware_notes/design.md §6)."""

    terminal_id: str
    stan: str
    transmitted_at: str

    def __str__(self) -> str:
        return f"{self.terminal_id}/{self.stan}/{self.transmitted_at}"


@dataclass(frozen=True)
class MessageRecord:
    """One authorization request as received and the response the center gave to it.

    ``state`` is a :class:`center.policy.MessageState`; ``reversed_amount`` is how much of
    ``amount`` a reversal took back.
    """

    key: MessageKey
    content_hash: bytes
    txn_type: str
    amount: int
    pan: str
    account_id: str | None
    response_code: str
    auth_code: str | None
    available_balance: int | None
    message: str
    state: str
    reversed_amount: int = 0
    received_at: str = ""

    def row(self) -> tuple[object, ...]:
        """The values in the ``messages`` table's column order (both backends' INSERT)."""
        k = self.key
        return (
            k.terminal_id, k.stan, k.transmitted_at, self.content_hash, self.txn_type,
            self.amount, self.pan, self.account_id, self.response_code, self.auth_code,
            self.available_balance, self.message, self.state, self.reversed_amount,
            self.received_at,
        )  # fmt: skip


class Storage(Protocol):
    """What the center needs from a database.  Every method must run inside :meth:`transaction`."""

    #: Whether :meth:`lock_rows` reads the ``lookups`` it is given ahead (a backend whose every
    #: read is a round trip); else the caller need not build them.
    reads_ahead: bool

    def transaction(self) -> AbstractContextManager[None]:
        """Context manager: outermost = one durable transaction, nested = savepoint."""
        ...

    def batch_transaction(self) -> AbstractContextManager[None]:
        """An outermost :meth:`transaction` for a group of independent requests whose caller
        decides the whole group again on :class:`StorageConflict` (the server's group commit).
        A backend may then report any failure of a statement as a conflict of the whole
        transaction, and answer the retry one statement at a time (PostgreSQL's pipeline)."""
        ...

    def close(self) -> None: ...

    # accounts and ledger
    def insert_account(self, account: AccountRecord) -> None: ...
    def get_account(self, account_id: str) -> AccountRecord | None: ...
    def insert_posting(
        self, reference: str, memo: str, entries: Sequence[tuple[str, int]]
    ) -> None:
        """One posting and its entries.  Returns nothing: nothing the center decides needs the
        posting's ID, and on PostgreSQL waiting for it would cost a round trip per approval."""
        ...
    def entry_sum(self, account_id: str | None = None) -> int:
        """Sum of the signed entries of one account, or of all accounts when ``None``."""
        ...

    def unbalanced_postings(self) -> list[int]: ...

    # holds
    def insert_hold(self, hold: HoldRecord) -> None: ...
    def get_hold(self, reference: str) -> HoldRecord | None: ...
    def update_hold(self, reference: str, amount: int, active: bool) -> None: ...
    def active_hold_sum(self, account_id: str) -> int: ...
    def balance_and_holds(self, account_id: str) -> tuple[int, int]:
        """``(entry_sum(account_id), active_hold_sum(account_id))`` in one round trip."""
        ...

    # terminals and cards
    def insert_terminal(self, terminal: TerminalRecord) -> None: ...
    def get_terminal(self, terminal_id: str) -> TerminalRecord | None: ...
    def insert_card(self, card: CardRecord) -> None: ...
    def get_card(self, pan: str) -> CardRecord | None: ...
    def update_card_security(self, pan: str, last_ksn_counter: int, pin_tries: int) -> None: ...

    # messages
    def insert_message(self, message: MessageRecord) -> None: ...
    def get_message(self, key: MessageKey) -> MessageRecord | None: ...
    def update_message_state(self, key: MessageKey, state: str, reversed_amount: int) -> None: ...
    def list_messages(self, day: str | None = None) -> list[MessageRecord]:
        """Every stored message (of one ``YYYY-MM-DD`` receive date), oldest first: reports."""
        ...

    def list_terminals(self) -> list[TerminalRecord]: ...

    # concurrency
    def lock_rows(
        self,
        pans: Collection[str],
        terminal_ids: Collection[str],
        messages: Collection[MessageKey],
        lookups: Collection[MessageKey] = (),
    ) -> None:
        """Lock, inside the current transaction, the rows a batch is about to change: the cards
        of ``pans`` (by PAN), then the balance rows (by account ID) of those cards' accounts,
        of the terminals' accounts and of the accounts of the stored ``messages`` (reversals).
        One fixed order for every process means two batches never wait for each other in a
        circle.  ``lookups``: other message keys the batch will look up (its requests' own keys,
        the pre-authorizations completions name); a backend whose every read is a round trip
        may read them, and ``messages``, now.  A no-op where one writer excludes the others
        (SQLite)."""
        ...


class SQLiteStorage:
    """:class:`Storage` on one SQLite file (WAL, ``synchronous=FULL``, foreign keys on).

    One connection, guarded by a re-entrant lock so that threads of a server take turns per
    outermost transaction; other processes are kept out by ``BEGIN IMMEDIATE`` and wait up to
    ``busy_timeout_ms`` for the lock.
    """

    reads_ahead = False  # a read is a function call, not a round trip

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._accounts: dict[str, AccountRecord] = {}
        self._terminals: dict[str, TerminalRecord] = {}
        self._where = str(path)
        try:
            # isolation_level=None: no implicit BEGINs; this class issues every BEGIN/COMMIT.
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        try:
            #: One cursor for the data statements (each is read out at once): Connection.execute
            #: makes a new cursor object per statement, ~8 per authorization.  Transaction
            #: control (BEGIN, SAVEPOINT, COMMIT, ROLLBACK) stays on the connection.
            self._cur = self._db.cursor()
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LocalError(f"database {path} cannot use WAL journal mode (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self.transaction():
                self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise _open_error(path, exc) from None
            raise

    def _migrate(self) -> None:
        """Apply :mod:`center.schema`'s migrations above ``PRAGMA user_version``; rebuild the
        running balances if their trigger is missing (a database someone altered by hand)."""
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        for migration in schema.pending(version, self._where):
            for statement in migration.statements("sqlite"):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {migration.version}")
        has_trigger = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'entries_balance'"
        ).fetchone()
        if not has_trigger:
            for statement in schema.RUNNING_BALANCES.statements("sqlite"):
                self._db.execute(statement)

    # -- transactions -------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        """Outermost: ``BEGIN IMMEDIATE`` ... ``COMMIT``; nested: a savepoint (an exception rolls
        back only that block).  A small class instead of a generator context manager: every
        decision opens one, and the generator's set-up and two resumptions cost more than
        the savepoint's own statements."""
        return _SQLiteTransaction(self)

    def batch_transaction(self) -> AbstractContextManager[None]:
        """The same transaction: SQLite runs in this process and waits for nothing."""
        return _SQLiteTransaction(self)

    def _forget_cached(self) -> None:
        self._accounts.clear()
        self._terminals.clear()

    def _require_txn(self) -> None:
        if self._depth == 0:
            raise LocalError("storage used outside storage.transaction()")

    def close(self) -> None:
        with self._lock:
            if self._depth:
                raise LocalError("cannot close storage inside a transaction")
            self._db.close()

    # -- accounts and ledger ------------------------------------------------------------------

    def insert_account(self, account: AccountRecord) -> None:
        self._require_txn()
        self._cur.execute(
            "INSERT INTO accounts (account_id, holder, kind, currency) VALUES (?, ?, ?, ?)",
            (account.account_id, account.holder, account.kind, account.currency),
        )

    def get_account(self, account_id: str) -> AccountRecord | None:
        """Accounts are insert-only (no UPDATE or DELETE anywhere), so a row once read is cached:
        an authorization asks for the same two accounts about six times.  The cache is dropped
        on every rollback, so an insert that was rolled back is never served from it."""
        cached = self._accounts.get(account_id)
        if cached is not None:
            return cached
        row = self._cur.execute(
            "SELECT account_id, holder, kind, currency FROM accounts WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        if not row:
            return None
        record = AccountRecord(*row)
        self._accounts[account_id] = record
        return record

    def insert_posting(
        self, reference: str, memo: str, entries: Sequence[tuple[str, int]]
    ) -> None:
        self._require_txn()
        cur = self._cur.execute(
            "INSERT INTO postings (reference, memo) VALUES (?, ?)", (reference, memo)
        )
        posting_id = cur.lastrowid
        assert posting_id is not None
        # One multi-row INSERT (its text cached per entry count) instead of executemany: a
        # posting has two entries, and one statement call costs less than the batch machinery.
        if not entries:
            return
        sql = _ENTRIES_INSERT.get(len(entries))
        if sql is None:
            sql = _ENTRIES_INSERT[len(entries)] = _entries_insert(len(entries))
        params: list[object] = []
        for account_id, amount in entries:
            params += (posting_id, account_id, amount)
        self._cur.execute(sql, params)

    def entry_sum(self, account_id: str | None = None) -> int:
        if account_id is None:
            row = self._cur.execute("SELECT COALESCE(SUM(amount), 0) FROM entries").fetchone()
        else:  # the trigger-kept running balance (the full sum stays the audit check above)
            row = self._cur.execute(
                "SELECT amount FROM balances WHERE account_id = ?", (account_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def unbalanced_postings(self) -> list[int]:
        rows = self._cur.execute(
            "SELECT p.posting_id FROM postings p LEFT JOIN entries e USING (posting_id) "
            "GROUP BY p.posting_id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.entry_id) < 2"
        ).fetchall()
        return [int(r[0]) for r in rows]

    # -- holds --------------------------------------------------------------------------------

    def insert_hold(self, hold: HoldRecord) -> None:
        self._require_txn()
        self._cur.execute(
            "INSERT INTO holds (reference, account_id, amount, active) VALUES (?, ?, ?, ?)",
            (hold.reference, hold.account_id, hold.amount, int(hold.active)),
        )

    def get_hold(self, reference: str) -> HoldRecord | None:
        row = self._cur.execute(
            "SELECT reference, account_id, amount, active FROM holds WHERE reference = ?",
            (reference,),
        ).fetchone()
        return HoldRecord(row[0], row[1], row[2], bool(row[3])) if row else None

    def update_hold(self, reference: str, amount: int, active: bool) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE holds SET amount = ?, active = ? WHERE reference = ?",
            (amount, int(active), reference),
        )

    def active_hold_sum(self, account_id: str) -> int:
        row = self._cur.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ? AND active = 1",
            (account_id,),
        ).fetchone()
        return int(row[0])

    def balance_and_holds(self, account_id: str) -> tuple[int, int]:
        row = self._cur.execute(
            "SELECT (SELECT amount FROM balances WHERE account_id = ?1), "
            "(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ?1 AND active = 1)",
            (account_id,),
        ).fetchone()
        return int(row[0] or 0), int(row[1])

    # -- terminals and cards ------------------------------------------------------------------

    def insert_terminal(self, terminal: TerminalRecord) -> None:
        self._require_txn()
        self._cur.execute(
            "INSERT INTO terminals (terminal_id, merchant_id, merchant_name, kind, account_id) "
            "VALUES (?, ?, ?, ?, ?)",
            terminal.row(),
        )

    def get_terminal(self, terminal_id: str) -> TerminalRecord | None:
        """Terminals are insert-only too: cached like accounts (dropped on every rollback)."""
        cached = self._terminals.get(terminal_id)
        if cached is not None:
            return cached
        row = self._cur.execute(
            "SELECT terminal_id, merchant_id, merchant_name, kind, account_id FROM terminals "
            "WHERE terminal_id = ?",
            (terminal_id,),
        ).fetchone()
        if not row:
            return None
        record = self._terminals[terminal_id] = TerminalRecord(*row)
        return record

    def insert_card(self, card: CardRecord) -> None:
        self._require_txn()
        self._cur.execute(
            "INSERT INTO cards (pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd, "
            "pin_tries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            card.row(),
        )

    def get_card(self, pan: str) -> CardRecord | None:
        row = self._cur.execute(
            "SELECT pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd, pin_tries "
            "FROM cards WHERE pan = ?",
            (pan,),
        ).fetchone()
        return CardRecord(*row) if row else None

    def update_card_security(self, pan: str, last_ksn_counter: int, pin_tries: int) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE cards SET last_ksn_counter = ?, pin_tries = ? WHERE pan = ?",
            (last_ksn_counter, pin_tries, pan),
        )

    # -- messages -----------------------------------------------------------------------------

    def insert_message(self, message: MessageRecord) -> None:
        self._require_txn()
        self._cur.execute(
            "INSERT INTO messages (terminal_id, stan, transmitted_at, content_hash, txn_type, "
            "amount, pan, account_id, response_code, auth_code, available_balance, message, "
            "state, reversed_amount, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            message.row(),
        )

    def get_message(self, key: MessageKey) -> MessageRecord | None:
        row = self._cur.execute(
            "SELECT content_hash, txn_type, amount, pan, account_id, response_code, auth_code, "
            "available_balance, message, state, reversed_amount, received_at FROM messages "
            "WHERE terminal_id = ? AND stan = ? AND transmitted_at = ?",
            (key.terminal_id, key.stan, key.transmitted_at),
        ).fetchone()
        return MessageRecord(key, *row) if row else None

    def update_message_state(self, key: MessageKey, state: str, reversed_amount: int) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE messages SET state = ?, reversed_amount = ? "
            "WHERE terminal_id = ? AND stan = ? AND transmitted_at = ?",
            (state, reversed_amount, key.terminal_id, key.stan, key.transmitted_at),
        )

    def list_messages(self, day: str | None = None) -> list[MessageRecord]:
        rows = self._cur.execute(
            "SELECT terminal_id, stan, transmitted_at, content_hash, txn_type, amount, pan, "
            "account_id, response_code, auth_code, available_balance, message, state, "
            "reversed_amount, received_at FROM messages WHERE ? IS NULL OR substr(received_at, "
            "1, 10) = ? ORDER BY rowid",
            (day, day),
        ).fetchall()
        return [MessageRecord(MessageKey(r[0], r[1], r[2]), *r[3:]) for r in rows]

    def list_terminals(self) -> list[TerminalRecord]:
        rows = self._cur.execute(
            "SELECT terminal_id, merchant_id, merchant_name, kind, account_id FROM terminals "
            "ORDER BY terminal_id"
        ).fetchall()
        return [TerminalRecord(*r) for r in rows]

    def lock_rows(
        self,
        pans: Collection[str],
        terminal_ids: Collection[str],
        messages: Collection[MessageKey],
        lookups: Collection[MessageKey] = (),
    ) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the database's one write lock, and
        a read costs no round trip."""

    def _update_one(self, sql: str, params: tuple[object, ...]) -> None:
        if self._cur.execute(sql, params).rowcount != 1:
            raise LocalError("update matched no row")


class _SQLiteTransaction:
    """:meth:`SQLiteStorage.transaction`'s context manager: holds the storage's lock from
    ``__enter__`` to ``__exit__``; outermost = ``BEGIN IMMEDIATE`` ... ``COMMIT``, nested = a
    savepoint named after its depth.  On an exception inside, the block is rolled back (and the
    caches of insert-only rows are dropped, so a rolled-back insert is never served from them);
    a failed ``COMMIT`` leaves no transaction open."""

    __slots__ = ("_depth", "_storage")

    def __init__(self, storage: SQLiteStorage) -> None:
        self._storage = storage
        self._depth = 0

    def __enter__(self) -> None:
        storage = self._storage
        storage._lock.acquire()
        try:
            depth = storage._depth
            storage._db.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
        except BaseException:
            storage._lock.release()
            raise
        storage._depth = depth + 1
        self._depth = depth

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        storage = self._storage
        depth = self._depth
        db = storage._db
        try:
            storage._depth = depth
            if exc_type is not None:
                storage._forget_cached()  # a rolled-back insert must not stay cached
                if depth == 0:
                    db.execute("ROLLBACK")
                else:
                    db.execute(f"ROLLBACK TO sp{depth}")
                    db.execute(f"RELEASE sp{depth}")
                return
            try:
                db.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")
            except BaseException:
                storage._forget_cached()
                # A failed COMMIT may or may not have rolled back by itself (SQLite does for
                # I/O errors, not for SQLITE_BUSY): make sure nothing of it stays open.
                if depth == 0 and db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        finally:
            storage._lock.release()


#: entry count -> the INSERT of that many entries (:meth:`SQLiteStorage.insert_posting`).
_ENTRIES_INSERT: dict[int, str] = {}


def _entries_insert(count: int) -> str:
    rows = ", ".join(["(?, ?, ?)"] * count)
    return f"INSERT INTO entries (posting_id, account_id, amount) VALUES {rows}"  # noqa: S608 -- placeholders only


def _open_error(path: str | Path, exc: sqlite3.Error) -> SwipepayError:
    """What opening the SQLite database at ``path`` failing means for the user: another
    process holding it locked past the busy timeout is :class:`StorageUnavailable` (try again);
    anything else (no such directory, not a database, not a file) is a configuration error."""
    if is_busy(exc):
        return StorageUnavailable(f"SQLite database {path} is locked by another process: {exc}")
    return ConfigError(
        f"cannot open the SQLite database {path}: {exc} (it must be a SQLite file, or a path "
        "in a writable directory where one can be created)"
    )
