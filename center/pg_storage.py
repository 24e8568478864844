"""The center's :class:`~center.storage.Storage` on PostgreSQL, through psycopg 3.

Why psycopg 3 (its synchronous API) and not asyncpg: the center's decision code
(:mod:`center.core`, :mod:`center.ledger`) is synchronous and shared with the SQLite backend
behind one storage interface, and the server decides a batch between two awaits on its loop, so
an async driver would mean a second, async copy of every rule or a loop inside the loop.
psycopg 3 is the maintained successor of psycopg2, speaks libpq (binary wheels, so no compiler
on the machine), and has server-side parameter binding, automatic prepared statements and a
pipeline mode.

Round trips. The cost of a decision here is its round trips to the server: with every statement
waiting for its answer, ~10 per request. Two things bring that to one (the funds check) plus the
batch's BEGIN, lock statements and COMMIT. :meth:`PostgresStorage.lock_rows` reads the batch's
cards and messages whole, with their locks, in one statement each, and
:meth:`~PostgresStorage.get_card` / :meth:`~PostgresStorage.get_message` answer from that read
(kept current by the transaction's own writes, dropped on any rollback: the rows are locked, so
nobody else changes them meanwhile). And pipeline mode: in a
:meth:`PostgresStorage.batch_transaction` (the server's group commit, which decides the batch
again on a conflict) the connection is in libpq's pipeline mode: a statement whose result
nothing reads (``SAVEPOINT``, the card's counter update, the message's insert, ``RELEASE``) is
sent without waiting and goes out with the next read, which waits for everything before it;
``COMMIT`` is followed by a sync. The price: an error of a statement sent without waiting shows
at a later read, possibly in the next request of the batch, so it cannot be pinned on one
request. A conflict or a lost connection fails the whole batch anyway (decided again, or 91);
any other error fails the whole transaction as a :class:`StorageConflict`, and the next
transaction runs without the pipeline, one statement at a time, where the error is raised inside
the request that caused it and rolls back that one only, as always. Updates sent without waiting
do not check their row count: each updates a row this transaction read ``FOR UPDATE`` (a card,
an original message) or a hold, and no row of those is ever deleted.

Transactions.  The outermost :meth:`PostgresStorage.transaction` is one PostgreSQL transaction
at READ COMMITTED with ``synchronous_commit = on`` (``COMMIT`` returning means the WAL is on the
server's disk); nested blocks are savepoints, as on SQLite.  READ COMMITTED with explicit row
locks, rather than SERIALIZABLE: every read-check-write of the center is on rows it can name
first (a card, an account's balance, an original message), so locking those rows makes each
check see the latest committed state and keeps it so until commit, without the retries that
SERIALIZABLE's whole-transaction conflict detection would add to every contended batch.  Each
statement under READ COMMITTED sees everything committed before it, so a check issued after a
lock was granted sees the state the lock protects.

Locks, taken with ``SELECT ... FOR UPDATE`` inside the decision's transaction:

* the card row (:meth:`get_card`) before the KSN counter and PIN tries are checked and updated;
* the account's balance row (:meth:`balance_and_holds`) before the funds check: two processes
  debiting one account take turns, so the second sees the first's posting and holds and the
  account never goes below zero available;
* the original message (:meth:`get_message`) before a completion or reversal changes its state;
* exactly-once comes from the messages primary key: a concurrent insert of the same key waits
  for the first writer and then fails with a unique violation, reported as
  :class:`StorageConflict`; the server decides the batch again and finds the stored answer.

:meth:`lock_rows` takes a batch's card and balance locks up front, cards by PAN then balances by
account ID, so two batches sharing accounts queue instead of deadlocking.  That includes the
terminals' accounts, which every posting updates: batches of one terminal take turns across
processes (they would anyway, on its balance row), batches of different terminals and cards
run side by side.  A deadlock that still
happens (PostgreSQL detects it) or a lock wait beyond :data:`LOCK_TIMEOUT_MS` is a
:class:`StorageConflict` too.

A lost or refused connection, or a server shutting down, is :class:`StorageUnavailable`; the
connection is dropped and the next outermost transaction connects again (``connect_timeout`` of
:data:`CONNECT_TIMEOUT_S`, so a dead server answers at once instead of hanging the center).
A connection lost while ``COMMIT`` was on its way is :class:`CommitOutcomeUnknown` (a kind of
unavailable): the server may have committed, so the center answers nothing for that batch.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from typing import Any, NoReturn

import psycopg
from psycopg import errors as pgerrors

from swipepay.center import schema
from swipepay.center.database import redact
from swipepay.center.storage import (
    AccountRecord,
    CardRecord,
    CommitOutcomeUnknown,
    HoldRecord,
    MessageKey,
    MessageRecord,
    StorageConflict,
    StorageUnavailable,
    TerminalRecord,
)
from swipepay.firmware_sim.errors import LocalError

#: Seconds to wait for a connection: a server that is down must not hold a batch for long.
CONNECT_TIMEOUT_S = 2
#: Longest wait for a row lock: beyond it the batch is a conflict and is decided again.
LOCK_TIMEOUT_MS = 5000

#: SQLSTATEs of "the server is going away or refuses work": shutdowns, crash recovery.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})
#: SQLSTATEs of "another transaction got in the way": deadlock, serialization, lock timeout.
_CONFLICT_STATES = frozenset({"40P01", "40001", "55P03"})


class PostgresStorage:
    """:class:`~center.storage.Storage` on one PostgreSQL database (one connection).

    Like :class:`~center.storage.SQLiteStorage`, a re-entrant lock lets threads of one process
    take turns per outermost transaction; other processes are kept apart by row locks.
    """

    reads_ahead = True  # lock_rows reads a batch's message lookups in one round trip

    def __init__(self, url: str) -> None:
        self._url = url
        self._where = redact(url)
        self._lock = threading.RLock()
        self._depth = 0
        self._conn: psycopg.Connection[Any] | None = None
        #: One cursor per connection, reused by every statement (a new cursor per statement
        #: costs ~20 us of CPU each, ~10 statements per authorization).
        self._cur: psycopg.Cursor[Any] | None = None
        self._accounts: dict[str, AccountRecord] = {}
        self._terminals: dict[str, TerminalRecord] = {}
        #: Balance rows :meth:`lock_rows` locked in the current outermost transaction (outside
        #: any savepoint, so held until it ends): a funds check on them needs no lock of its own.
        self._locked: set[str] = set()
        #: Cards :meth:`lock_rows` locked and read in the current outermost transaction, as this
        #: transaction last wrote them: nobody else can change them until it ends, so
        #: :meth:`get_card` needs no round trip for them.  Dropped on every rollback.
        self._cards: dict[str, CardRecord] = {}
        #: Messages :meth:`lock_rows` looked up for the batch (``None``: not stored), locked when
        #: found, kept current by this transaction's own inserts and updates; dropped on every
        #: rollback.  A key absent from it is read from the table.
        self._messages: dict[MessageKey, MessageRecord | None] = {}
        #: The open transaction's pipeline (see the module docstring), or None.
        self._pipeline: psycopg.Pipeline | None = None
        self._pipeline_block: AbstractContextManager[psycopg.Pipeline] | None = None
        #: The next batch transaction runs without the pipeline (the last one failed on an
        #: error that a pipeline cannot pin on one request: see the module docstring).
        self._step_by_step = False
        with self.transaction():
            self._migrate()

    # -- connection -----------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,  # this class issues every BEGIN / COMMIT / SAVEPOINT itself
                connect_timeout=CONNECT_TIMEOUT_S,
                # A peer that vanished without a FIN is noticed within ~10 s, not hours: idle
                # (keepalives) or with a statement unanswered (tcp_user_timeout, ms).
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=10_000,
                application_name="swipepay-center",
            )
        except psycopg.Error as exc:
            raise StorageUnavailable(
                f"cannot reach PostgreSQL at {self._where}: {_first_line(exc)}; "
                "is the server running and the URL right?"
            ) from None
        try:
            conn.execute("SET synchronous_commit = on")
            conn.execute("SET default_transaction_isolation = 'read committed'")
            conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}")
        except psycopg.Error as exc:
            conn.close()
            self._raise(exc)
        return conn

    def _cursor(self) -> psycopg.Cursor[Any]:
        if self._cur is None:
            self._conn = self._connect()
            self._cur = self._conn.cursor()
        return self._cur

    def _drop_connection(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
        self._pipeline = self._pipeline_block = None  # they go with their connection
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()

    def _raise(self, exc: psycopg.Error) -> NoReturn:
        """Raise ``exc`` as what it means to the center (see the module docstring)."""
        state = exc.sqlstate or ""
        conn = self._conn
        if isinstance(exc, pgerrors.PipelineAborted):  # the error that aborted it came first
            self._step_by_step = True
            raise StorageConflict("pipeline aborted by an earlier error") from exc
        if (
            isinstance(exc, psycopg.InterfaceError | psycopg.OperationalError)
            and (not state or state.startswith("08") or state in _UNAVAILABLE_STATES)
        ) or (conn is not None and conn.broken):
            self._drop_connection()
            raise StorageUnavailable(
                f"PostgreSQL at {self._where} unavailable: {_first_line(exc)}"
            ) from exc
        if state in _CONFLICT_STATES:
            raise StorageConflict(f"concurrent transaction: {_first_line(exc)}") from exc
        if isinstance(exc, pgerrors.UniqueViolation) and exc.diag.table_name == "messages":
            raise StorageConflict("message key stored concurrently by another writer") from exc
        if self._pipeline is not None:  # the failed statement may be any sent since the last wait
            self._step_by_step = True
            raise StorageConflict(
                f"a statement sent in a pipeline failed ({_first_line(exc)}); the transaction is "
                "decided again one statement at a time"
            ) from exc
        raise exc

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        try:
            return self._cursor().execute(sql, params)
        except psycopg.Error as exc:
            self._raise(exc)

    def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        cursor = self._execute(sql, params)
        try:  # in a pipeline, the server's answer (an error included) arrives with the fetch
            row: tuple[Any, ...] | None = cursor.fetchone()
        except psycopg.Error as exc:
            self._raise(exc)
        return row

    def _all(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._execute(sql, params)
        try:  # see _one
            rows: list[tuple[Any, ...]] = cursor.fetchall()
        except psycopg.Error as exc:
            self._raise(exc)
        return rows

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply :mod:`center.schema`'s pending migrations, serialized by an advisory lock (the
        DDL is transactional: a failed migration leaves the database as it was)."""
        self._execute("SELECT pg_advisory_xact_lock(%s)", (schema.PG_MIGRATION_LOCK,))
        self._execute(schema.PG_VERSION_TABLE)
        row = self._one("SELECT COALESCE(MAX(version), 0) FROM schema_version", ())
        current = int(row[0]) if row else 0
        for migration in schema.pending(current, self._where):
            for statement in migration.statements("postgresql"):
                self._execute(statement)
            self._execute(
                "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )

    def schema_version(self) -> int:
        row = self._one("SELECT COALESCE(MAX(version), 0) FROM schema_version", ())
        return int(row[0]) if row else 0

    # -- transactions -------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        """Outermost: one transaction, each statement waiting for its answer; nested: a
        savepoint (in a batch transaction, part of its pipeline)."""
        return self._transaction(pipelined=False)

    def batch_transaction(self) -> AbstractContextManager[None]:
        """An outermost transaction in pipeline mode (the module docstring): any failure of a
        statement is a :class:`StorageConflict` of the whole transaction, and the next batch
        transaction then runs one statement at a time."""
        return self._transaction(pipelined=True)

    @contextmanager
    def _transaction(self, *, pipelined: bool) -> Iterator[None]:
        with self._lock:
            depth = self._depth
            savepoint = f"sp{depth}"
            if depth == 0:
                self._locked.clear()
                self._cards.clear()
                self._messages.clear()
                self._begin()
                if pipelined:
                    if not self._step_by_step:
                        self._enter_pipeline()
                    self._step_by_step = False
            else:
                self._execute(f"SAVEPOINT {savepoint}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                self._forget_cached()  # a rolled-back insert must not stay cached
                self._roll_back(depth, savepoint)
                raise
            self._depth -= 1
            try:
                self._execute("COMMIT" if depth == 0 else f"RELEASE {savepoint}")
                if depth == 0:  # every statement sent without waiting answers (or raises) here
                    self._leave_pipeline()
            except StorageUnavailable as exc:
                self._forget_cached()
                self._roll_back(depth, savepoint)
                if depth:
                    raise
                # The server may have committed before the connection went: a retransmission
                # of any request of it finds the stored answer if so, or is decided afresh.
                raise CommitOutcomeUnknown(f"{exc}; the COMMIT's outcome is unknown") from exc
            except BaseException:
                self._forget_cached()
                self._roll_back(depth, savepoint)
                raise

    def _enter_pipeline(self) -> None:
        conn = self._conn
        if conn is not None and self._pipeline is None:
            self._pipeline_block = conn.pipeline()
            self._pipeline = self._pipeline_block.__enter__()

    def _leave_pipeline(self, *, quiet: bool = False) -> None:
        """Sync and leave pipeline mode; an error of a statement sent without waiting is
        raised here (as what it means, :meth:`_raise`), or swallowed when ``quiet`` (a
        rollback: the error that caused it is already on its way)."""
        block, self._pipeline, self._pipeline_block = self._pipeline_block, None, None
        if block is None:
            return
        try:
            block.__exit__(None, None, None)
        except psycopg.Error as exc:
            if not quiet:
                self._raise(exc)

    def _sync(self) -> None:
        """Wait for the answers to everything sent so far (see :meth:`_leave_pipeline`)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            pipeline.sync()
        except psycopg.Error as exc:
            self._raise(exc)

    def _begin(self) -> None:
        """``BEGIN``, connecting first if there is no connection.  A connection found dead here
        (the server restarted since the last transaction) is replaced once at once: nothing of
        this transaction has happened yet, so nothing can be lost or done twice."""
        had_connection = self._conn is not None
        try:
            self._execute("BEGIN")
        except StorageUnavailable:
            if not had_connection:
                raise
            self._execute("BEGIN")

    def _roll_back(self, depth: int, savepoint: str) -> None:
        """Undo the failed block; a connection that broke is just dropped (its transaction is
        gone with it), so the original error is what the caller sees."""
        conn = self._conn
        if conn is None or conn.broken or conn.closed:
            self._drop_connection()
            return
        if depth and self._pipeline is not None:
            # Everything sent so far must have succeeded before this block alone is undone: an
            # error of an earlier block's statement that only shows now fails the whole
            # transaction instead (raised here, in place of the caller's exception).
            self._sync()
        try:
            if depth == 0:
                self._leave_pipeline(quiet=True)
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
        except psycopg.Error:
            self._drop_connection()

    def _forget_cached(self) -> None:
        self._cards.clear()
        self._messages.clear()
        self._accounts.clear()
        self._terminals.clear()

    def _require_txn(self) -> None:
        if self._depth == 0:
            raise LocalError("storage used outside storage.transaction()")

    def close(self) -> None:
        with self._lock:
            if self._depth:
                raise LocalError("cannot close storage inside a transaction")
            self._drop_connection()

    # -- concurrency --------------------------------------------------------------------------

    def lock_rows(
        self,
        pans: Collection[str],
        terminal_ids: Collection[str],
        messages: Collection[MessageKey],
        lookups: Collection[MessageKey] = (),
    ) -> None:
        """Cards by PAN, then balance rows by account ID, ``FOR UPDATE`` (see the protocol);
        then the stored messages among ``messages`` and ``lookups``, ``FOR UPDATE`` by key, read
        whole for :meth:`get_message` (one round trip for the batch instead of one each)."""
        self._require_txn()
        outermost = self._depth == 1  # a savepoint's locks go if it is rolled back
        accounts: set[str] = set()
        if pans:
            rows = self._all(
                "SELECT pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd, pin_tries "
                "FROM cards WHERE pan = ANY(%s) ORDER BY pan FOR UPDATE",
                (sorted(pans),),
            )
            for row in rows:
                card = _card(row)
                accounts.add(card.account_id)
                if outermost:
                    self._cards[card.pan] = card
        for terminal_id in {*terminal_ids, *(k.terminal_id for k in messages)}:
            terminal = self.get_terminal(terminal_id)
            if terminal is not None:
                accounts.add(terminal.account_id)
        if messages:
            rows = self._all(
                "SELECT m.account_id FROM messages m JOIN unnest(%s::text[], %s::text[], "
                "%s::text[]) AS k(t, s, a) ON (m.terminal_id, m.stan, m.transmitted_at) = "
                "(k.t, k.s, k.a) WHERE m.account_id IS NOT NULL",
                _key_arrays(messages),
            )
            accounts.update(r[0] for r in rows)
        if accounts:
            rows = self._all(
                "SELECT account_id FROM balances WHERE account_id = ANY(%s) "
                "ORDER BY account_id FOR UPDATE",
                (sorted(accounts),),
            )
            if outermost:
                self._locked.update(r[0] for r in rows)
        wanted = {*messages, *lookups}
        if wanted and outermost:
            rows = self._all(
                "SELECT m.terminal_id, m.stan, m.transmitted_at, m.content_hash, m.txn_type, "
                "m.amount, m.pan, m.account_id, m.response_code, m.auth_code, "
                "m.available_balance, m.message, m.state, m.reversed_amount, m.received_at "
                "FROM messages m JOIN unnest(%s::text[], %s::text[], %s::text[]) "
                "AS k(t, s, a) ON (m.terminal_id, m.stan, m.transmitted_at) = (k.t, k.s, k.a) "
                "ORDER BY m.terminal_id, m.stan, m.transmitted_at FOR UPDATE OF m",
                _key_arrays(wanted),
            )
            found: dict[MessageKey, MessageRecord | None] = dict.fromkeys(wanted)
            for r in rows:
                key = MessageKey(r[0], r[1], r[2])
                found[key] = _message(key, r[3:])
            self._messages.update(found)

    # -- accounts and ledger ------------------------------------------------------------------

    def insert_account(self, account: AccountRecord) -> None:
        self._require_txn()
        self._execute(
            "INSERT INTO accounts (account_id, holder, kind, currency) VALUES (%s, %s, %s, %s)",
            (account.account_id, account.holder, account.kind, account.currency),
        )
        # The balance row exists from the start, so a funds check always has a row to lock.
        self._execute(
            "INSERT INTO balances (account_id, amount) VALUES (%s, 0) "
            "ON CONFLICT (account_id) DO NOTHING",
            (account.account_id,),
        )

    def get_account(self, account_id: str) -> AccountRecord | None:
        """Cached like SQLiteStorage's: accounts are insert-only; the cache is dropped on every
        rollback."""
        cached = self._accounts.get(account_id)
        if cached is not None:
            return cached
        row = self._one(
            "SELECT account_id, holder, kind, currency FROM accounts WHERE account_id = %s",
            (account_id,),
        )
        if not row:
            return None
        record = self._accounts[account_id] = AccountRecord(*row)
        return record

    def insert_posting(
        self, reference: str, memo: str, entries: Sequence[tuple[str, int]]
    ) -> None:
        self._require_txn()
        # One statement, and in a pipeline no wait: the posting (inserted by the data-modifying
        # CTE whatever the entries), then its entries in the given order.
        self._execute(
            "WITH p AS (INSERT INTO postings (reference, memo) VALUES (%s, %s) "
            "RETURNING posting_id) "
            "INSERT INTO entries (posting_id, account_id, amount) "
            "SELECT p.posting_id, e.account_id, e.amount FROM p, "
            "unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS e(account_id, amount, n) "
            "ORDER BY e.n",
            (reference, memo, [a for a, _ in entries], [m for _, m in entries]),
        )

    def entry_sum(self, account_id: str | None = None) -> int:
        if account_id is None:
            row = self._one("SELECT COALESCE(SUM(amount), 0) FROM entries", ())
        else:  # the trigger-kept running balance
            row = self._one("SELECT amount FROM balances WHERE account_id = %s", (account_id,))
        return int(row[0]) if row else 0

    def unbalanced_postings(self) -> list[int]:
        rows = self._all(
            "SELECT p.posting_id FROM postings p LEFT JOIN entries e USING (posting_id) "
            "GROUP BY p.posting_id HAVING COALESCE(SUM(e.amount), 0) <> 0 OR COUNT(e.entry_id) < 2 "
            "ORDER BY p.posting_id"
        )
        return [int(r[0]) for r in rows]

    # -- holds --------------------------------------------------------------------------------

    def insert_hold(self, hold: HoldRecord) -> None:
        self._require_txn()
        self._execute(
            "INSERT INTO holds (reference, account_id, amount, active) VALUES (%s, %s, %s, %s)",
            (hold.reference, hold.account_id, hold.amount, int(hold.active)),
        )

    def get_hold(self, reference: str) -> HoldRecord | None:
        row = self._one(
            "SELECT reference, account_id, amount, active FROM holds WHERE reference = %s",
            (reference,),
        )
        return HoldRecord(row[0], row[1], int(row[2]), bool(row[3])) if row else None

    def update_hold(self, reference: str, amount: int, active: bool) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE holds SET amount = %s, active = %s WHERE reference = %s",
            (amount, int(active), reference),
        )

    def active_hold_sum(self, account_id: str) -> int:
        row = self._one(
            "SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = %s AND active = 1",
            (account_id,),
        )
        return int(row[0]) if row else 0

    def balance_and_holds(self, account_id: str) -> tuple[int, int]:
        """The balance row is locked first; the holds are summed by the next statement, which
        (READ COMMITTED) sees every transaction that committed while this one waited.  When
        :meth:`lock_rows` already holds the row, one statement reads both (nothing to wait
        for, so its snapshot is current)."""
        if account_id in self._locked:
            row = self._one(
                "SELECT (SELECT amount FROM balances WHERE account_id = %s), "
                "(SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = %s AND active = 1)",
                (account_id, account_id),
            )
            assert row is not None
            return int(row[0] or 0), int(row[1])
        row = self._one(
            "SELECT amount FROM balances WHERE account_id = %s FOR UPDATE", (account_id,)
        )
        return (int(row[0]) if row else 0), self.active_hold_sum(account_id)

    # -- terminals and cards ------------------------------------------------------------------

    def insert_terminal(self, terminal: TerminalRecord) -> None:
        self._require_txn()
        self._execute(
            "INSERT INTO terminals (terminal_id, merchant_id, merchant_name, kind, account_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            terminal.row(),
        )

    def get_terminal(self, terminal_id: str) -> TerminalRecord | None:
        cached = self._terminals.get(terminal_id)
        if cached is not None:
            return cached
        row = self._one(
            "SELECT terminal_id, merchant_id, merchant_name, kind, account_id FROM terminals "
            "WHERE terminal_id = %s",
            (terminal_id,),
        )
        if not row:
            return None
        record = self._terminals[terminal_id] = TerminalRecord(*row)
        return record

    def insert_card(self, card: CardRecord) -> None:
        self._require_txn()
        self._cards.pop(card.pan, None)
        self._execute(
            "INSERT INTO cards (pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd, "
            "pin_tries) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            card.row(),
        )

    def get_card(self, pan: str) -> CardRecord | None:
        """Locked (``FOR UPDATE``) until the transaction ends: the KSN counter and PIN tries
        read here are what the decision checks and then writes.  A card :meth:`lock_rows`
        already locked and read in this transaction comes from that read."""
        locked = self._cards.get(pan)
        if locked is not None:
            return locked
        row = self._one(
            "SELECT pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd, pin_tries "
            "FROM cards WHERE pan = %s FOR UPDATE",
            (pan,),
        )
        return _card(row) if row else None

    def update_card_security(self, pan: str, last_ksn_counter: int, pin_tries: int) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE cards SET last_ksn_counter = %s, pin_tries = %s WHERE pan = %s",
            (last_ksn_counter, pin_tries, pan),
        )
        locked = self._cards.get(pan)
        if locked is not None:
            self._cards[pan] = replace(
                locked, last_ksn_counter=last_ksn_counter, pin_tries=pin_tries
            )

    # -- messages -----------------------------------------------------------------------------

    def insert_message(self, message: MessageRecord) -> None:
        self._require_txn()
        self._execute(
            "INSERT INTO messages (terminal_id, stan, transmitted_at, content_hash, txn_type, "
            "amount, pan, account_id, response_code, auth_code, available_balance, message, "
            "state, reversed_amount, received_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            message.row(),
        )
        # A later lookup of this key in this transaction (a duplicate in the same batch) must
        # find it, as a read of the table would (if the insert failed, so does the transaction).
        self._messages[message.key] = message

    def get_message(self, key: MessageKey) -> MessageRecord | None:
        """Locked (``FOR UPDATE``) when found: a completion or reversal changes its state.  A
        key :meth:`lock_rows` read ahead in this transaction comes from that read."""
        if key in self._messages:
            return self._messages[key]
        row = self._one(
            "SELECT content_hash, txn_type, amount, pan, account_id, response_code, auth_code, "
            "available_balance, message, state, reversed_amount, received_at FROM messages "
            "WHERE terminal_id = %s AND stan = %s AND transmitted_at = %s FOR UPDATE",
            (key.terminal_id, key.stan, key.transmitted_at),
        )
        return _message(key, row) if row else None

    def update_message_state(self, key: MessageKey, state: str, reversed_amount: int) -> None:
        self._require_txn()
        self._update_one(
            "UPDATE messages SET state = %s, reversed_amount = %s "
            "WHERE terminal_id = %s AND stan = %s AND transmitted_at = %s",
            (state, reversed_amount, key.terminal_id, key.stan, key.transmitted_at),
        )
        cached = self._messages.get(key)
        if cached is not None:
            self._messages[key] = replace(cached, state=state, reversed_amount=reversed_amount)
        else:
            self._messages.pop(key, None)

    def list_messages(self, day: str | None = None) -> list[MessageRecord]:
        """Oldest first: by receive time, then key (PostgreSQL has no insertion order)."""
        rows = self._all(
            "SELECT terminal_id, stan, transmitted_at, content_hash, txn_type, amount, pan, "
            "account_id, response_code, auth_code, available_balance, message, state, "
            "reversed_amount, received_at FROM messages "
            "WHERE %s::text IS NULL OR substr(received_at, 1, 10) = %s "
            "ORDER BY received_at, terminal_id, stan, transmitted_at",
            (day, day),
        )
        return [_message(MessageKey(r[0], r[1], r[2]), r[3:]) for r in rows]

    def list_terminals(self) -> list[TerminalRecord]:
        rows = self._all(
            "SELECT terminal_id, merchant_id, merchant_name, kind, account_id FROM terminals "
            "ORDER BY terminal_id"
        )
        return [TerminalRecord(*r) for r in rows]

    def _update_one(self, sql: str, params: tuple[object, ...]) -> None:
        cursor = self._execute(sql, params)
        # In a pipeline the count is not waited for (the module docstring says why it is safe).
        if self._pipeline is None and cursor.rowcount != 1:
            raise LocalError("update matched no row")


def _key_arrays(keys: Collection[MessageKey]) -> tuple[list[str], list[str], list[str]]:
    """Message keys as the three arrays an ``unnest(%s::text[], %s::text[], %s::text[])``
    joins on, in key order (the order rows are then locked in)."""
    ordered = sorted(keys, key=lambda k: (k.terminal_id, k.stan, k.transmitted_at))
    return (
        [k.terminal_id for k in ordered],
        [k.stan for k in ordered],
        [k.transmitted_at for k in ordered],
    )


def _card(row: Sequence[Any]) -> CardRecord:
    """A card from the columns pan, expiry, account_id, phone_key, ikid, last_ksn_counter, pvd,
    pin_tries (in that order)."""
    return CardRecord(
        row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), int(row[5]), bytes(row[6]),
        int(row[7]),
    )  # fmt: skip


def _message(key: MessageKey, row: Sequence[Any]) -> MessageRecord:
    return MessageRecord(
        key,
        bytes(row[0]),
        row[1],
        int(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        None if row[7] is None else int(row[7]),
        row[8],
        row[9],
        int(row[10]),
        row[11],
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
