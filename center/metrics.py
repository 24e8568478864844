"""The center's metrics hooks (the Prometheus implementation lands beside this)."""

from __future__ import annotations


class ServerMetrics:
    """No-op default: the server calls these; a center without --metrics pays nothing."""

    def answered(self, kind: str, code: str, seconds: float) -> None:
        """One request answered: its kind, field 39, seconds from frame to answer."""

    def batch(self, size: int, commit_seconds: float) -> None:
        """One group-commit batch decided and committed."""

    def connection_opened(self) -> None:
        """An authenticated terminal connection opened."""

    def connection_closed(self) -> None:
        """An authenticated terminal connection closed."""

    def verifier(self, up: bool) -> None:
        """The signature-verifier child process is running (or not)."""

    def database_error(self, kind: str) -> None:
        """unavailable, conflict, commit_unknown or malfunction."""
