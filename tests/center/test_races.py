"""Several center processes on one PostgreSQL database, racing.

Four processes, each with its own :class:`Center` and the server's own batch decision
(:meth:`CenterServer._decide`: row locks in a fixed order, a conflicting batch decided again),
hammer three accounts with purchases, withdrawals, deposits, pre-authorizations, completions
and reversals; a share of the requests is also sent, byte for byte, by another process (a
terminal's retransmission landing on another center).  Then every invariant is checked against
the database:

* the ledger balances, every posting on its own and in total;
* no cardholder account was ever below zero available (each approval's stored balance) and none
  is now; each account's ledger balance is what its stored messages say it must be;
* exactly one stored message per request key, and every 00 answer is stored with its
  authorization code (durable);
* every copy of a request got the same answer, and none got 91 or 96;
* the holds are what the pre-authorizations' states say (active and full while approved, shrunk
  by a partial reversal, released once completed or reversed).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import ssl
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from swipepay.center.core import AuthRequest, AuthResponse, Center
from swipepay.center.keystore import CenterKeys
from swipepay.center.pg_storage import PostgresStorage
from swipepay.center.policy import MessageState
from swipepay.center.server import CenterServer
from swipepay.center.storage import MessageKey
from swipepay.firmware_sim.dukpt import DukptDevice, derive_initial_key
from swipepay.firmware_sim.ecc import encode_point, generate_key
from swipepay.firmware_sim.hostlink.iso8583 import ReversalRequest
from swipepay.firmware_sim.transaction import Transaction, TxnType
from tests.support.lab_center import batch_jobs
from tests.support.world import Phone

WORKERS = 4
ACCOUNTS = ("ACC-0", "ACC-1", "ACC-2")
OPENING = 150_00
REQUESTS_PER_WORKER = 110
POS, ATM = "POS00001", "ATM00001"
MERCHANT, BANK = "MERCH0001", "BANK0001"
EXPIRY = "2712"
AT = "0615120000"
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
P, W, D = TxnType.PURCHASE, TxnType.WITHDRAWAL, TxnType.DEPOSIT
PRE, COMP = TxnType.PREAUTH, TxnType.COMPLETION

Request = AuthRequest | ReversalRequest
#: What a worker reports per request sent: kind, key, response code, auth code, message.
Outcome = tuple[str, tuple[str, str, str], str, str | None, str]


@dataclass
class Card:
    pan: str
    account: str
    phone: Phone


def _worker(
    url: str,
    keys: CenterKeys,
    batches: list[list[Request]],
    start: Any,
    results: Any,
) -> None:
    """One center process: decide ``batches`` in order through the server's batch decision;
    put ``("ok", outcomes)`` or ``("error", traceback)`` on ``results``."""
    try:
        center = Center.open(url, keys)
        server = CenterServer(
            lambda: center, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), use_verifier=False
        )
        server._clock = lambda: NOW
        start.wait(60)  # every process connected: now race
        outcomes = asyncio.run(_decide_all(server, center, batches))
        center.close()
        results.put(("ok", outcomes))
    except BaseException:
        results.put(("error", traceback.format_exc()))


async def _decide_all(
    server: CenterServer, center: Center, batches: list[list[Request]]
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for batch in batches:
        answers: list[AuthResponse] = await server._decide(center, batch_jobs(list(batch)))
        for req, answer in zip(batch, answers, strict=True):
            if isinstance(req, AuthRequest):
                t = req.txn
                key = (t.terminal_id, t.stan, t.transmitted_at)
                kind = t.type.value
            else:
                key = (req.terminal_id, req.original_stan, req.original_at)
                kind = "reversal"
            outcomes.append((kind, key, answer.response_code, answer.auth_code, answer.message))
    return outcomes


# -- the workload --------------------------------------------------------------------------------


def _enroll(url: str, keys: CenterKeys) -> list[list[Card]]:
    """Three funded accounts; per worker, a card (own phone, own DUKPT device) on each."""
    cards: list[list[Card]] = []
    with Center.open(url, keys) as center:
        for account in ACCOUNTS:
            center.open_account(account, account, OPENING)
        center.register_terminal(POS, MERCHANT, "Shop", "pos")
        center.register_terminal(ATM, BANK, "ATM", "atm")
        for w in range(WORKERS):
            row = []
            for a, account in enumerate(ACCOUNTS):
                pan = f"41111111{w:02d}{a:02d}0000"
                ikid = keys.bdk_id + bytes([0, 0, w, a])
                key = generate_key()
                device = DukptDevice(derive_initial_key(keys.bdk, ikid), ikid)
                phone_key = encode_point(key.public_key())
                center.enroll(pan=pan, expiry=EXPIRY, account_id=account, phone_key=phone_key,
                              ikid=ikid, pin="1357")  # fmt: skip
                row.append(Card(pan, account, Phone(key, device, "1357")))
            cards.append(row)
    return cards


class Workload:
    """Every worker's requests, in sending order, from one seeded random generator."""

    def __init__(self, cards: list[list[Card]], seed: int) -> None:
        self.rng = random.Random(seed)
        self.stan = 0
        self.scripts: list[list[Request]] = [[] for _ in cards]
        for w, own in enumerate(cards):
            self._script(w, own)
        self._retransmit()

    def _txn(self, card: Card, type_: TxnType, amount: int, **kw: Any) -> Transaction:
        self.stan += 1
        atm = type_ in (W, D)
        return Transaction(type=type_, amount=amount, pan=card.pan, expiry=EXPIRY,
                           terminal_id=ATM if atm else POS, merchant_id=BANK if atm else MERCHANT,
                           stan=f"{self.stan:06d}", transmitted_at=AT, **kw)  # fmt: skip

    def _script(self, w: int, own: list[Card]) -> None:
        rng, out = self.rng, self.scripts[w]
        open_preauths: list[AuthRequest] = []
        reversible: list[AuthRequest] = []
        for _ in range(REQUESTS_PER_WORKER):
            card = rng.choice(own)
            roll = rng.random()
            req: Request
            if roll < 0.28:
                req = card.phone.request(self._txn(card, P, rng.randint(1, 40) * 1_00))
            elif roll < 0.45:
                req = card.phone.request(self._txn(card, W, rng.randint(1, 40) * 1_00))
            elif roll < 0.55:
                req = card.phone.request(self._txn(card, D, rng.randint(1, 25) * 1_00))
            elif roll < 0.70:
                req = card.phone.request(self._txn(card, PRE, rng.randint(1, 30) * 1_00))
                open_preauths.append(req)
            elif roll < 0.82 and open_preauths:
                pre = open_preauths.pop(rng.randrange(len(open_preauths)))
                holder = next(c for c in own if c.pan == pre.txn.pan)
                amount = rng.choice([pre.txn.amount, pre.txn.amount // 2 or 1, pre.txn.amount + 1])
                req = AuthRequest(self._txn(holder, COMP, amount, original_stan=pre.txn.stan,
                                            original_at=pre.txn.transmitted_at))  # fmt: skip
            elif reversible:
                orig = rng.choice(reversible).txn
                give_back = rng.choice([None, orig.amount // 2 or 1])
                req = ReversalRequest(orig.terminal_id, orig.stan, orig.transmitted_at, give_back,
                                      orig.amount)  # fmt: skip
            else:
                continue
            # A deposit's reversal takes the money back unconditionally (the ATM kept no
            # cash), so it can leave an account below zero whatever the locking: not reversed
            # here, where "never below zero" is the invariant under test.
            if isinstance(req, AuthRequest) and req.txn.type is not D:
                reversible.append(req)
            out.append(req)

    def _retransmit(self) -> None:
        """A fifth of each worker's requests is sent again by another worker (same bytes),
        and some by the same worker later on.  A copy goes about where the original is in its
        own script or later, as a terminal retransmits after a timeout: a copy far ahead of its
        original would spend the card's KSN counter early and turn the original's predecessors
        into replays (63), a real outcome but one that starves the race of approvals."""
        copies: list[tuple[int, float, Request]] = []
        for w, script in enumerate(self.scripts):
            for n, req in enumerate(script):
                at = n / len(script)
                if self.rng.random() < 0.2:
                    other = self.rng.choice([x for x in range(len(self.scripts)) if x != w])
                    copies.append((other, self.rng.uniform(at, min(at + 0.2, 1.0)), req))
                if self.rng.random() < 0.05:
                    copies.append((w, self.rng.uniform(at, 1.0), req))
        for target, at, req in sorted(copies, key=lambda c: -c[1]):
            script = self.scripts[target]
            script.insert(round(at * len(script)), req)

    def batches(self, w: int) -> list[list[Request]]:
        """Worker ``w``'s requests cut into batches of 1 to 4, as a server's group commit."""
        script, out, i = self.scripts[w], [], 0
        while i < len(script):
            n = self.rng.randint(1, 4)
            out.append(script[i : i + n])
            i += n
        return out


def _run_workers(
    url: str, keys: CenterKeys, batches: Sequence[list[list[Request]]]
) -> list[Outcome]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(batches))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, keys, b, start, results), daemon=True)
        for b in batches
    ]
    for proc in procs:
        proc.start()
    outcomes: list[Outcome] = []
    try:
        for _ in procs:
            status, payload = results.get(timeout=180)
            assert status == "ok", payload
            outcomes.extend(payload)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return outcomes


# -- the race ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_four_centers_race_on_three_accounts(pg_url: str) -> None:
    keys = CenterKeys.generate(bdk_id=bytes.fromhex("12345678"))
    cards = _enroll(pg_url, keys)
    load = Workload(cards, seed=14)
    outcomes = _run_workers(pg_url, keys, [load.batches(w) for w in range(WORKERS)])

    storage = PostgresStorage(pg_url)
    center = Center(storage, keys)
    try:
        with storage.transaction():
            stored = {m.key: m for m in storage.list_messages()}
            holds = {m.key: storage.get_hold(str(m.key)) for m in stored.values()}
        _check(center, outcomes, stored, holds)
    finally:
        center.close()


def _check(center: Center, outcomes: list[Outcome], stored: dict[MessageKey, Any],
           holds: dict[MessageKey, Any]) -> None:  # fmt: skip
    by_key: dict[tuple[str, str, str], set[tuple[str, str | None]]] = defaultdict(set)
    codes: dict[str, int] = defaultdict(int)
    for kind, key, code, auth_code, _ in outcomes:
        codes[code] += 1
        assert code not in ("91", "96"), (kind, key, code)
        if kind != "reversal":
            by_key[key].add((code, auth_code))
    # the race really raced: approvals, and declines for want of funds
    assert codes["00"] > 100 and codes["51"] > 5, dict(codes)

    # every copy of a request got the same answer; each key stored once; every 00 durable
    for key, answers in by_key.items():
        assert len(answers) == 1, (key, answers)
        (code, auth_code), message = next(iter(answers)), stored.get(MessageKey(*key))
        assert message is not None, key
        assert (message.response_code, message.auth_code) == (code, auth_code)
    assert set(stored) == {MessageKey(*k) for k in by_key}  # nothing stored that was not sent

    # the ledger balances, per posting and in total
    assert center.check_balanced()

    # each cardholder account: what its messages say, never below zero available
    effect = {P.value: -1, W.value: -1, COMP.value: -1, D.value: 1, PRE.value: 0}
    moved = {MessageState.APPROVED, MessageState.PARTIALLY_REVERSED, MessageState.REVERSED,
             MessageState.COMPLETED}  # fmt: skip
    expected = dict.fromkeys(ACCOUNTS, OPENING)
    held = dict.fromkeys(ACCOUNTS, 0)
    for m in stored.values():
        if m.response_code == "00":
            assert m.state in moved
            assert m.available_balance is not None and m.available_balance >= 0, m
            expected[m.account_id] += effect[m.txn_type] * (m.amount - m.reversed_amount)
        else:
            assert m.state == MessageState.DECLINED
    for account in ACCOUNTS:
        assert center.ledger_balance(account) == expected[account], account

    # holds follow the pre-authorizations' states
    for key, m in stored.items():
        hold = holds[key]
        if m.txn_type != PRE.value or m.response_code != "00":
            assert hold is None, (key, hold)
            continue
        assert hold is not None and hold.account_id == m.account_id
        left = m.amount - m.reversed_amount
        if m.state == MessageState.APPROVED:
            assert (hold.active, hold.amount) == (True, m.amount)
        elif m.state == MessageState.PARTIALLY_REVERSED:
            assert (hold.active, hold.amount) == (left > 0, left)
        else:  # completed or reversed
            assert not hold.active, (key, m.state, hold)
        if hold.active:
            held[m.account_id] += hold.amount
    for account in ACCOUNTS:
        available = center.available_balance(account)
        assert available == expected[account] - held[account] >= 0, account
