"""The center's import path of the secret-file rules, which live in :mod:`drivers.store.secretfile`
(the phone and terminal stores write secret files too, and drivers/ may not import the center)."""

from swipepay.drivers.store.secretfile import FOREIGN_ACCESS, read_private, write_private

__all__ = ["FOREIGN_ACCESS", "read_private", "write_private"]
