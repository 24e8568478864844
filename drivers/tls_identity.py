"""Loading a TLS identity (the lab CA, a certificate and its private key) into an SSL context,
for the terminal's client side and the center's server side alike.

The private key is a secret file: refused when others could have read it (the rule of
:mod:`drivers.store.secretfile`), before OpenSSL reads it.  Files OpenSSL cannot use (missing,
not PEM, a key that does not match the certificate) are a :class:`ConfigError` naming them,
not an ``ssl.SSLError`` from inside the handshake set-up.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from swipepay.drivers.store.secretfile import read_private
from swipepay.firmware_sim.errors import ConfigError


def load_identity(ctx: ssl.SSLContext, ca: Path, cert: Path, key: Path, whose: str) -> None:
    """Trust ``ca`` and present ``cert`` with ``key`` (``whose``: "the center", "terminal
    POS00001", for the messages)."""
    read_private(key)
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{whose}: cannot load the CA certificate {ca}: {_why(exc)}") from None
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{whose}: cannot load the TLS certificate {cert} with its key {key}: {_why(exc)}"
        ) from None


def _why(exc: ssl.SSLError | OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return str(exc.strerror or exc)
