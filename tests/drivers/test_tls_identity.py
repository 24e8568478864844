"""The TLS identity of a terminal or the center: loaded from the lab's files, the private key
refused when others could read it, unusable files named in a configuration error."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from swipepay.center.lab import Lab
from swipepay.drivers.tls_identity import load_identity
from swipepay.firmware_sim.errors import ConfigError


def files(lab: Lab, tmp_path: Path) -> tuple[Path, Path, Path]:
    base = lab.root / "terminals" / "POS00001"
    for name in ("tls.crt", "tls.key"):
        shutil.copy2(base / name, tmp_path / name)
    return lab.root / "ca" / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"


def context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def test_the_lab_files_load(lab: Lab, tmp_path: Path) -> None:
    load_identity(context(), *files(lab, tmp_path), "terminal POS00001")


def test_a_key_others_could_read_is_refused(lab: Lab, tmp_path: Path) -> None:
    # Before: OpenSSL read it whatever its mode (the secret-file rule did not reach TLS keys).
    ca, cert, key = files(lab, tmp_path)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="others may have read it"):
        load_identity(context(), ca, cert, key, "terminal POS00001")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("ca", "terminal POS00001: cannot load the CA certificate"),
        ("cert", "terminal POS00001: cannot load the TLS certificate"),
        ("key", "terminal POS00001: cannot load the TLS certificate"),
    ],
)
def test_unusable_files_are_named(lab: Lab, tmp_path: Path, broken: str, message: str) -> None:
    # Before: ssl.SSLError ("PEM lib") tracebacks from `terminal run`.
    ca, cert, key = files(lab, tmp_path)
    if broken == "ca":
        ca = tmp_path / "ca.crt"
        ca.write_text("garbage\n")
    elif broken == "cert":
        cert.write_text("-----BEGIN\n")
    else:
        key.write_text("garbage\n")
    with pytest.raises(ConfigError, match=message):
        load_identity(context(), ca, cert, key, "terminal POS00001")
