"""The ``swipepay`` command (placeholder until the commands land)."""

import click


@click.group()
def main() -> None:
    """swipepay: card read at the terminal, confirmation and PIN on the phone."""
