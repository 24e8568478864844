"""Root test configuration: the shared fixtures of tests/support, registered once here, and
``--soak``, which runs the parsers' property tests at volume.

A property test of a parser of outside bytes carries ``@pytest.mark.soak("<parser>")``.  A normal
run ignores the mark (each test keeps its own, small ``max_examples``).  With ``--soak`` only the
marked tests run, each with ``--soak-examples`` examples (default 100,000; ``scale=`` on the mark
multiplies it), no deadline and no health checks; every example is counted per parser, and so is
every example that raised (an unhandled exception: the test fails too).  ``units=`` on the mark
counts something finer per example (e.g. APDUs per applet state).  ``--soak-report FILE`` writes
the counts as JSON (what ``swipepay bench soak`` prints).
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

#: Every fixture that more than one test module uses lives in one of these (tests/support/);
#: a module comes after the ones it imports, so that pytest rewrites the asserts of each.
pytest_plugins = [
    "tests.support.ci",
    "tests.support.world",
    "tests.support.labs",
    "tests.support.lab_center",
    "tests.support.silent_center",
    "tests.support.phonelink",
    "tests.support.phones",
    "tests.support.pty",
    "tests.support.pcsc",
    "tests.support.postgres",
    "tests.support.backends",
]

SOAK_EXAMPLES = 100_000

settings.register_profile(
    "soak",
    max_examples=SOAK_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

_examples: Counter[str] = Counter()
_raised: Counter[str] = Counter()
_units: Counter[str] = Counter()
_seconds: dict[str, float] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soak")
    group.addoption("--soak", action="store_true", help="run only the soak-marked property "
                    "tests, at --soak-examples examples each")
    group.addoption("--soak-examples", type=int, default=SOAK_EXAMPLES, metavar="N")
    group.addoption("--soak-parser", action="append", default=[], metavar="NAME",
                    help="only this parser's soak tests (repeatable)")
    group.addoption("--soak-report", default=None, metavar="FILE", help="write counts as JSON")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak(parser, scale=1, units=None): property test of a parser; volume "
        "run with --soak"
    )
    if config.getoption("--soak"):
        settings.load_profile("soak")


def _counting(name: str, inner: Callable[..., Any],
              units: Callable[[dict[str, Any]], dict[str, int]] | None) -> Callable[..., Any]:
    @functools.wraps(inner)
    def run(*args: Any, **kwargs: Any) -> Any:
        _examples[name] += 1
        if units is not None:
            for unit, n in units(kwargs).items():
                _units[f"{name} {unit}"] += n
        try:
            return inner(*args, **kwargs)
        except BaseException:
            _raised[name] += 1
            raise

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--soak"):
        return
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("soak")
        test = getattr(item, "obj", None)
        handle = getattr(test, "hypothesis", None)
        if mark is None or handle is None:
            drop.append(item)
            continue
        name = str(mark.args[0]) if mark.args else item.name
        only = config.getoption("--soak-parser")
        if only and name not in only:
            drop.append(item)
            continue
        n = int(config.getoption("--soak-examples") * mark.kwargs.get("scale", 1))
        base = getattr(test, "_hypothesis_internal_use_settings", None) or settings()
        test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
            base,
            max_examples=n,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        inner = handle.inner_test
        if not getattr(inner, "_soak_counted", False):
            wrapped = _counting(name, inner, mark.kwargs.get("units"))
            wrapped._soak_counted = True  # type: ignore[attr-defined]
            handle.inner_test = wrapped
        item.user_properties.append(("soak", name))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    started = time.perf_counter()
    yield
    for key, value in item.user_properties:
        if key == "soak":
            name = str(value)
            _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - started


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.getoption("--soak"):
        return
    rows = {
        name: {
            "examples": _examples[name],
            "unhandled_exceptions": _raised[name],
            "seconds": round(_seconds.get(name, 0.0), 1),
        }
        for name in sorted(_examples)
    }
    units = dict(sorted(_units.items()))
    terminalreporter.write_sep("=", "soak")
    for name, row in rows.items():
        terminalreporter.write_line(
            f"{name:<24} {row['examples']:>9,} examples  {row['unhandled_exceptions']} unhandled"
            f"  {row['seconds']:.1f} s"
        )
    for unit, n in units.items():
        terminalreporter.write_line(f"{unit:<32} {n:>9,}")
    path = config.getoption("--soak-report")
    if path:
        Path(path).write_text(json.dumps({"parsers": rows, "units": units}, indent=1) + "\n")
