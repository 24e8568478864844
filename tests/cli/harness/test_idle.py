"""``swipepay bench idle`` at a small fleet: every connection held past the center's idle
timeout by echo keep-alives, a payment approved meanwhile, RSS per connection reported."""

from __future__ import annotations

import json

from click.testing import CliRunner

from swipepay.cli.main import main


def test_a_small_fleet_is_held_past_the_idle_timeout() -> None:
    args = ["--terminals", "200", "--idle-timeout", "2", "--keepalive", "0.8",
            "--client-processes", "2", "--json"]  # fmt: skip
    out = CliRunner().invoke(main, ["bench", "idle", *args])
    assert out.exit_code == 0, out.output
    r = json.loads(out.stdout)
    assert (r["opened"], r["failed"], r["open_after_hold"]) == (200, 0, 200)
    assert r["closed_by_center"] == 0 and r["all_answered"]
    assert r["held_s"] > 2.0  # longer than the idle timeout: the keep-alives kept them
    assert r["echoes_answered"] >= 2 * 200  # at least one keep-alive each, and the last round
    assert r["payment"] == "APPROVED 00" and r["payment_approved"]
    assert 0 < r["center_rss_per_connection_kb"] < 500
    assert r["client_processes"] == 2 and r["center_open_file_limit"] >= 200


def test_a_keepalive_that_cannot_beat_the_idle_timeout_is_refused() -> None:
    out = CliRunner().invoke(main, ["bench", "idle", "--terminals", "10", "--idle-timeout", "2",
                                    "--keepalive", "2"])  # fmt: skip
    assert out.exit_code == 3
    assert "--keepalive must be shorter than --idle-timeout" in out.output
