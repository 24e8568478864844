"""PC/SC faults of the daemon itself (issue 4): pcscd not running, and pcscd stopped or restarted
under a terminal that is waiting for a card or a phone.

These stop the tests' own pcscd (under the slot lock of swipepay.cli.harness.pcscd, so no other test
session uses it meanwhile) and never touch a pcscd someone else started: with a foreign daemon
running they skip, except in CI where there is none and a skip would hide a failure.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from swipepay.cli.harness.pcscd import Pcscd
from swipepay.cli.harness.processes import wait_for
from swipepay.drivers.pcsc import PcscCardReader, PcscPhoneLink, list_readers
from swipepay.drivers.registry import open_card_reader, open_phone_link
from swipepay.firmware_sim.errors import ConfigError, LinkTimeout, SwipepayError, TransportError

#: How long the waiting side is allowed to wait; it must end with an error well before this.
WAIT = 5.0
#: Slack for thread start-up and the daemon's restart when checking that nothing hangs.
SLACK = 5.0


@pytest.fixture
def own_pcscd(pcscd: Pcscd) -> Iterator[Pcscd]:
    """The tests' own pcscd, which these tests may stop; running again at the end."""
    if not pcscd.ours:
        reason = "a pcscd not started by the tests is running; these tests would have to stop it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield pcscd
    pcscd.start_daemon()


def waiting(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``call`` in a thread (the waiting terminal); its exception lands in the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # examined in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="waiting-terminal", daemon=True)
    thread.start()
    wait_for(lambda: in_pcsc_wait(thread) or not thread.is_alive(), WAIT,
             "the terminal to wait on pcscd")  # fmt: skip
    return thread, errors


def in_pcsc_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside pyscard's wait for a card (SCardGetStatusChange on an
    established context), where a pcscd going away must end it with an error."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "waitforcard":
            return True
        frame = frame.f_back
    return False


def finished(thread: threading.Thread, errors: list[BaseException]) -> SwipepayError:
    """The waiting side's error, after checking it ended instead of hanging."""
    thread.join(WAIT + SLACK)
    assert not thread.is_alive(), "the waiting terminal hung after pcscd went away"
    assert len(errors) == 1, errors
    error = errors[0]
    assert isinstance(error, SwipepayError), repr(error)
    return error


def test_pcscd_not_running_is_one_clear_error(own_pcscd: Pcscd) -> None:
    own_pcscd.stop_daemon()
    result = subprocess.run(
        [sys.executable, "-c", "from swipepay.cli.main import main; main()",
         "card", "read", "--reader", "pcsc:X", "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == ConfigError.exit_code, result.stdout + result.stderr
    assert "error: pcscd is not running" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for call in (list_readers, lambda: open_phone_link("pcsc:X").connect(1.0)):
        with pytest.raises(ConfigError, match="pcscd is not running"):
            call()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_pcscd_stopped_under_a_waiting_phone_link(own_pcscd: Pcscd) -> None:
    link = open_phone_link("pcsc:Virtual PCD 00 01")
    assert isinstance(link, PcscPhoneLink)
    thread, errors = waiting(lambda: link.connect(WAIT))
    own_pcscd.stop_daemon()
    error = finished(thread, errors)
    assert isinstance(error, TransportError)
    assert "pcscd" in str(error)
    del errors, error
    gc.collect()  # pyscard's __del__ must not raise (filterwarnings makes that a failure)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_pcscd_restarted_under_a_waiting_card_reader(own_pcscd: Pcscd) -> None:
    reader = open_card_reader("pcsc:Virtual PCD 00 00")
    assert isinstance(reader, PcscCardReader)
    thread, errors = waiting(lambda: reader.read_card(WAIT))
    own_pcscd.stop_daemon()
    own_pcscd.start_daemon()
    error = finished(thread, errors)
    assert isinstance(error, TransportError)
    assert "pcscd" in str(error)
    # The next attempt talks to the new daemon: no stale context, just "no card yet".
    with pytest.raises(LinkTimeout, match="no card on Virtual PCD 00 00"):
        reader.read_card(0.3)
    del errors, error
    gc.collect()
