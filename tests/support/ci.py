"""Missing tools: a skip on a developer's machine, a failure in CI (where a skip would hide it)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether the ``CI`` environment variable says this is a CI run."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test because ``reason`` (what to install); fail it in CI."""
    if in_ci():
        pytest.fail(f"unavailable in CI: {reason}")
    pytest.skip(reason)
