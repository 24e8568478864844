"""The conformance suite passes against the real applet and catches deliberately broken phones."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from swipepay.firmware_sim import conformance
from swipepay.firmware_sim.conformance import (
    CHECKS,
    Check,
    CheckResult,
    Context,
    run_check,
    select_checks,
)
from swipepay.firmware_sim.errors import (
    ConfigError,
    DecodeError,
    SecurityError,
    TransportError,
)
from swipepay.firmware_sim.phone import Choice
from tests.support.phonelink import conformance_setup

Transmit = Callable[[bytes], bytes]


def run_all(ctx: Context, transmit: Transmit) -> dict[str, CheckResult]:
    return {c.name: run_check(c, ctx, transmit, lambda s: None) for c in CHECKS}


def failing(results: dict[str, CheckResult]) -> set[str]:
    return {name for name, r in results.items() if not r.passed}


def test_real_applet_passes_every_check() -> None:
    ctx, phone = conformance_setup()
    results = run_all(ctx, phone.process)
    assert failing(results) == set(), {n: r.detail for n, r in results.items() if not r.passed}
    assert "signature verified" in results["transaction"].detail
    assert results["wrong-token"].seen == "9000 6A88 6985"


def test_checks_are_rows_of_data() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    assert {"select", "wrong-aid", "wrong-token", "foreign-ca", "expired-cert",
            "malformed-cert", "tampered",
            "replay", "out-of-order", "lengths", "wrong-cla", "unknown-ins",
            "transaction"} == set(names)
    for check in CHECKS:
        assert check.sends and check.expected


def test_phone_answering_9000_to_a_wrong_token_fails() -> None:
    ctx, phone = conformance_setup()

    def lenient(apdu: bytes) -> bytes:
        answer = phone.process(apdu)
        return b"\x90\x00" if answer == b"\x6a\x88" else answer

    assert "wrong-token" in failing(run_all(ctx, lenient))


def test_phone_without_certificate_checks_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "swipepay.firmware_sim.phonelink.applet.verify_certificate", lambda *a, **k: None
    )
    ctx, phone = conformance_setup()
    assert failing(run_all(ctx, phone.process)) == {"foreign-ca", "expired-cert"}


def test_phone_answering_6a80_to_a_malformed_certificate_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A phone that reports a certificate it cannot parse as a malformed body (6A80) instead of
    # the one certificate status word 6982 fails exactly the malformed-cert check.
    monkeypatch.setattr("swipepay.firmware_sim.phonelink.applet.CertificateError", DecodeError)
    ctx, phone = conformance_setup()
    results = run_all(ctx, phone.process)
    assert failing(results) == {"malformed-cert"}
    assert "expected 6982, got 6A80" in results["malformed-cert"].detail


def test_every_malformed_certificate_gets_6982_and_wipes() -> None:
    ctx, phone = conformance_setup()
    result = run_check(select_checks(["malformed-cert"])[0], ctx, phone.process, lambda s: None)
    cases = conformance.malformed_certificates(ctx.certificate)
    assert result.passed, result.detail
    assert result.seen == " ".join(["9000 9000 6982 6985"] * len(cases))


def test_phone_caching_answers_fails_replay() -> None:
    ctx, phone = conformance_setup()
    last: list[bytes] = [b"", b""]

    def caching(apdu: bytes) -> bytes:
        if apdu == last[0]:
            return last[1]
        last[0], last[1] = apdu, phone.process(apdu)
        return last[1]

    assert "replay" in failing(run_all(ctx, caching))


def test_phone_with_wrong_length_answers_fails() -> None:
    ctx, phone = conformance_setup()

    def sloppy(apdu: bytes) -> bytes:
        answer = phone.process(apdu)
        return b"\x6a\x80" if answer == b"\x67\x00" else answer

    assert failing(run_all(ctx, sloppy)) == {"lengths"}


def test_phone_answering_6f00_to_everything_fails_everything() -> None:
    ctx, _ = conformance_setup()
    assert failing(run_all(ctx, lambda apdu: b"\x6f\x00")) == {c.name for c in CHECKS}


def test_garbage_answers_are_failures_not_crashes() -> None:
    ctx, _ = conformance_setup()
    results = run_all(ctx, lambda apdu: b"\x01")
    assert all("malformed response" in r.detail for r in results.values())


def test_declining_user_fails_only_the_transaction() -> None:
    ctx, phone = conformance_setup(Choice.DECLINE)
    results = run_all(ctx, phone.process)
    assert failing(results) == {"transaction"}
    assert "DECLINED" in results["transaction"].detail


def test_silent_user_gives_up_after_max_polls() -> None:
    ctx, phone = conformance_setup(Choice.IGNORE)
    result = run_check(select_checks(["transaction"])[0], ctx, phone.process, lambda s: None)
    assert not result.passed and "10 polls" in result.detail


def test_broken_link_is_reported_for_reconnect() -> None:
    ctx, phone = conformance_setup()
    calls = [0]

    def leaves(apdu: bytes) -> bytes:
        calls[0] += 1
        if calls[0] > 2:
            raise TransportError("the phone left the field")
        return phone.process(apdu)

    result = run_check(select_checks(["foreign-ca"])[0], ctx, leaves, lambda s: None)
    assert not result.passed and result.link_broken and "left" in result.detail


def test_a_check_raising_an_unexpected_remote_error_fails_cleanly() -> None:
    ctx, phone = conformance_setup()

    def boom(ctx: Context, probe: conformance.Probe) -> str:
        probe.send(bytes.fromhex("00a4040007f053575041590100"))
        raise SecurityError("bad")

    result = run_check(Check("x", "y", "9000", boom), ctx, phone.process, lambda s: None)
    assert not result.passed and result.seen == "9000"


def test_select_checks_by_name() -> None:
    assert [c.name for c in select_checks(["lengths", "select"])] == ["lengths", "select"]
    assert select_checks(None) == CHECKS
    with pytest.raises(ConfigError, match="nope"):
        select_checks(["nope"])
