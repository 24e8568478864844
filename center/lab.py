"""The lab directory that ``swipepay init`` creates and every program reads.

One acquirer CA signs both the TLS certificates (center server, terminal clients) and the
compact phone-link certificates of the terminals.  The center enrolls each card with its
account, its phone's public key and its phone's DUKPT initial key ID.  Secret files are 0600.

Layout::

    lab.json                     what is in the lab (no secrets)
    ca/ca.key  ca/ca.crt         acquirer CA (P-256)
    center/center.key .crt       center TLS server identity
    center/keys/                 BDK, BDK ID, PIN verification key (center.keystore)
    center/center.db             SQLite ledger and enrollments (unless lab.json's ``database``
                                 names another database, e.g. postgresql://...)
    terminals/<TID>/tls.key .crt terminal TLS client identity (CN = terminal ID)
    terminals/<TID>/link.key     terminal phone-link signing key
    terminals/<TID>/link.cert    compact phone-link certificate
    terminals/<TID>/terminal.db  the terminal's own state: STAN, pre-auths, reversal queue
                                 (drivers/store/terminal_store.py)
    phones/<name>.json           phone profile: bound card, signing key, DUKPT key, CA keys
    secrets/pins.json            the lab cardholders' PINs (the simulated users know them)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from swipepay.center.keystore import CenterKeys
from swipepay.drivers.store.phone_store import PhoneProfile
from swipepay.drivers.store.secretfile import read_private, write_private
from swipepay.drivers.store.userfile import read_regular
from swipepay.firmware_sim import ecc
from swipepay.firmware_sim.carddata import luhn_check_digit
from swipepay.firmware_sim.cards.spec import CardSpec
from swipepay.firmware_sim.certificate import (
    TerminalCertificate,
    issue_certificate,
    parse_certificate,
)
from swipepay.firmware_sim.dukpt import derive_initial_key
from swipepay.firmware_sim.errors import ConfigError, DecodeError, SwipepayError
from swipepay.firmware_sim.phonelink.protocol import AID, parse_aid
from swipepay.firmware_sim.pinblock import pin_well_formed
from swipepay.firmware_sim.terminal import TerminalConfig

CA_KEY_INDEX = 1
_T = TypeVar("_T")
MANIFEST = "lab.json"


@dataclass(frozen=True)
class TerminalEntry:
    terminal_id: str
    merchant_id: str
    merchant_name: str
    kind: str


@dataclass(frozen=True)
class AccountEntry:
    account_id: str
    holder: str
    balance: int


#: The sample lab: accounts, cards, phones and terminals (specs as data).
SAMPLE_ACCOUNTS = (
    AccountEntry("alice-checking", "Alice Martin", 1_500_00),
    AccountEntry("bob-checking", "Bob Chen", 40_00),
    AccountEntry("carol-checking", "Carol Diaz", 250_00),
)
SAMPLE_CARDS = (
    # name, PAN prefix (check digit added), holder, interfaces, data in GPO, account
    (
        "alice-visa",
        "476173900101011",
        "MARTIN/ALICE",
        ("contactless", "contact", "magstripe"),
        False,
        "alice-checking",
    ),
    ("bob-debit", "541333000000001", "CHEN/BOB", ("contact", "magstripe"), False, "bob-checking"),
    ("carol-qvsdc", "476173900101234", "DIAZ/CAROL", ("contactless",), True, "carol-checking"),
)
SAMPLE_PHONES = (
    ("alice-phone", "alice-visa"),
    ("bob-phone", "bob-debit"),
    ("carol-phone", "carol-qvsdc"),
)
SAMPLE_TERMINALS = (
    TerminalEntry("POS00001", "MERCH0000000001", "Corner Coffee", "pos"),
    TerminalEntry("ATM00001", "BANKATM00000001", "Harbour Bank ATM", "atm"),
)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=None)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an EC key")
    return key


def _x509(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    *,
    ca: bool = False,
    server: bool = False,
    now: dt.datetime,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)


class Lab:
    """A lab directory, read lazily."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.exists():
            raise ConfigError(
                f"{self.root} is not a swipepay lab (no {MANIFEST}); "
                f"run `swipepay init {self.root}`"
            )
        try:
            data = json.loads(read_regular(manifest, "lab manifest").decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{manifest} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{manifest} is not a JSON object: not a lab manifest")
        self.manifest: dict[str, Any] = data

    def _entries(self, key: str, build: Callable[[dict[str, Any]], _T]) -> list[_T]:
        """lab.json's ``key`` list, each entry made by ``build``: a hand edit that broke it is a
        :class:`ConfigError` naming the list, not a ``KeyError`` or ``TypeError`` from deep
        inside (the exception's text is left out: an entry may hold a card number)."""
        try:
            entries = self.manifest.get(key, [])
            if not isinstance(entries, list):
                raise TypeError(f"{key} is not a list")
            return [build(entry) for entry in entries]
        except (KeyError, TypeError, ValueError, AttributeError, SwipepayError) as exc:
            raise ConfigError(
                f"{self.root / MANIFEST}: the {key!r} entries are malformed "
                f"({type(exc).__name__}); mend them or create the lab again"
            ) from None

    @property
    def aid(self) -> bytes:
        """The phone-link AID of this lab's terminals and phones (lab.json ``aid``, hex; the
        default F0535750415901 when absent)."""
        text = self.manifest.get("aid")
        if text is None:
            return AID
        if not isinstance(text, str):
            raise ConfigError(f"{self.root / MANIFEST}: aid must be a hex string")
        return parse_aid(text)

    @property
    def db_path(self) -> Path:
        """The lab's own SQLite file (the center's database unless ``database`` says else)."""
        return self.root / "center" / "center.db"

    @property
    def database_url(self) -> str:
        """The center's database (:mod:`center.database`): lab.json ``database`` (a relative
        SQLite path there is taken from the lab directory), else the lab's SQLite file."""
        from swipepay.center.database import parse_url, sqlite_url

        value = self.manifest.get("database")
        if value is None:
            return sqlite_url(self.db_path)
        if not isinstance(value, str):
            raise ConfigError(f"{self.root / MANIFEST}: database must be a URL string")
        parsed = parse_url(value, self.root)
        return parsed.target if parsed.kind == "postgresql" else sqlite_url(parsed.path)

    def center_keys(self) -> CenterKeys:
        return CenterKeys.load(self.root / "center" / "keys")

    def cards(self) -> dict[str, CardSpec]:
        specs = self._entries("cards", CardSpec.from_json)
        return {spec.name: spec for spec in specs}

    def card_account(self, card: str) -> str:
        for name, account in self._entries("cards", lambda c: (str(c["name"]), str(c["account"]))):
            if name == card:
                return account
        raise ConfigError(f"no card named {card!r}")

    def phones(self) -> dict[str, str]:
        """Phone name -> name of the card it is bound to."""
        return dict(self._entries("phones", lambda p: (str(p["name"]), str(p["card"]))))

    def phone_path(self, name: str) -> Path:
        if name not in self.phones():
            raise ConfigError(f"no phone named {name!r} (lab phones: {', '.join(self.phones())})")
        return self.root / "phones" / f"{name}.json"

    def phone_profile(self, name: str) -> PhoneProfile:
        return PhoneProfile.load(self.phone_path(name))

    def terminals(self) -> dict[str, TerminalEntry]:
        entries = self._entries("terminals", lambda t: TerminalEntry(**t))
        return {entry.terminal_id: entry for entry in entries}

    def terminal_config(self, terminal_id: str) -> TerminalConfig:
        entry = self.terminals().get(terminal_id)
        if entry is None:
            raise ConfigError(f"no terminal {terminal_id!r} in {self.root}")
        return TerminalConfig(
            entry.terminal_id, entry.merchant_id, entry.merchant_name, entry.kind, aid=self.aid
        )

    def terminal_link_identity(
        self, terminal_id: str
    ) -> tuple[TerminalCertificate, ec.EllipticCurvePrivateKey]:
        base = self.root / "terminals" / terminal_id
        try:
            cert = parse_certificate((base / "link.cert").read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"terminal {terminal_id} has no phone-link certificate") from None
        except DecodeError as exc:
            raise ConfigError(
                f"terminal {terminal_id}: bad phone-link certificate: {exc}"
            ) from None
        return cert, _load_key(base / "link.key")

    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        return _load_key(self.root / "ca" / "ca.key")

    def pins(self) -> dict[str, str]:
        """The lab cardholders' PINs by card (only simulated users and tests read this): a
        JSON object of well-formed PINs, else a :class:`ConfigError` that shows none of them."""
        path = self.root / "secrets" / "pins.json"
        try:
            data = json.loads(read_private(path).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{path} is not valid JSON") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, str) and pin_well_formed(v) for v in data.values()
        ):
            raise ConfigError(f"{path} must map each card name to a PIN of 4 to 12 digits")
        return {str(k): v for k, v in data.items()}

    def pin(self, card: str) -> str:
        """The lab PIN of ``card`` (:meth:`pins`); a :class:`ConfigError` if it has none."""
        pin = self.pins().get(card)
        if pin is None:
            raise ConfigError(f"no PIN for card {card!r} in {self.root / 'secrets' / 'pins.json'}")
        return pin


def create_lab(
    root: Path, *, now: dt.datetime | None = None, database: str | None = None
) -> Lab:
    """Create a complete lab in ``root`` (which must not already hold one); its center data
    (accounts, terminals, enrollments) goes to ``database`` (a URL, :mod:`center.database`),
    recorded in lab.json, or to the lab's own SQLite file."""
    from swipepay.center.core import (
        Center,  # the center core pulls in SQLite; only init needs it here
    )
    from swipepay.center.database import has_password, parse_url

    root = Path(root)
    if (root / MANIFEST).exists():
        raise ConfigError(f"{root} already holds a lab; remove it or choose another directory")
    if database is not None:
        parse_url(database, root)  # a bad URL is refused before anything is written
        if has_password(database):
            raise ConfigError(
                "lab.json holds no secrets and would record this URL: leave the password out "
                "of it and give it through PGPASSWORD or ~/.pgpass"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the lab directory {root}: {exc.strerror or exc}"
        ) from None
    now = now or dt.datetime.now(dt.UTC)
    expiry = f"{(now.year + 3) % 100:02d}12"

    ca_key = ecc.generate_key()
    ca_cert = _x509("swipepay lab acquirer CA", ca_key, ca_key, None, ca=True, now=now)
    write_private(root / "ca" / "ca.key", _pem_key(ca_key))
    _write_public(root / "ca" / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))

    center_key = ecc.generate_key()
    center_cert = _x509(
        "swipepay center", center_key, ca_key, ca_cert.subject, server=True, now=now
    )
    write_private(root / "center" / "center.key", _pem_key(center_key))
    _write_public(
        root / "center" / "center.crt", center_cert.public_bytes(serialization.Encoding.PEM)
    )

    keys = CenterKeys.generate()
    keys.save(root / "center" / "keys")
    ca_point = ecc.encode_point(ca_key.public_key())

    for t in SAMPLE_TERMINALS:
        base = root / "terminals" / t.terminal_id
        tls_key = ecc.generate_key()
        tls_cert = _x509(t.terminal_id, tls_key, ca_key, ca_cert.subject, now=now)
        write_private(base / "tls.key", _pem_key(tls_key))
        _write_public(base / "tls.crt", tls_cert.public_bytes(serialization.Encoding.PEM))
        link_key = ecc.generate_key()
        cert = issue_certificate(
            ca_key,
            CA_KEY_INDEX,
            terminal_id=t.terminal_id,
            merchant_id=t.merchant_id,
            merchant_name=t.merchant_name,
            public_key=ecc.encode_point(link_key.public_key()),
            not_before=int(now.timestamp()) - 300,
            not_after=int(now.timestamp()) + 825 * 86400,
        )
        write_private(base / "link.key", _pem_key(link_key))
        _write_public(base / "link.cert", cert.encode())

    cards = []
    pins: dict[str, str] = {}
    for name, prefix, holder, interfaces, in_gpo, account in SAMPLE_CARDS:
        pan = prefix + luhn_check_digit(prefix)
        spec = CardSpec(name, pan, expiry, holder, interfaces, in_gpo)
        cards.append({**spec.to_json(), "account": account})
        pins[name] = f"{secrets.randbelow(10_000):04d}"
    write_private(root / "secrets" / "pins.json", json.dumps(pins, indent=2).encode("utf-8"))

    phones = []
    target: str | Path = root / "center" / "center.db"
    if database is not None:  # a relative SQLite path is the lab's, as lab.json reads it
        parsed = parse_url(database, root)
        target = parsed.target if parsed.kind == "postgresql" else parsed.path
    with Center.open(target, keys) as center:
        for acc in SAMPLE_ACCOUNTS:
            center.open_account(acc.account_id, acc.holder, acc.balance)
        for t in SAMPLE_TERMINALS:
            center.register_terminal(t.terminal_id, t.merchant_id, t.merchant_name, t.kind)
        for phone_name, card_name in SAMPLE_PHONES:
            card = next(c for c in cards if c["name"] == card_name)
            signing_key = ecc.generate_key()
            ikid = keys.bdk_id + secrets.token_bytes(4)
            profile = PhoneProfile(
                name=phone_name,
                card=card_name,
                pan=card["pan"],
                signing_key_pem=_pem_key(signing_key),
                initial_key=derive_initial_key(keys.bdk, ikid),
                ikid=ikid,
                counter=0,
                ca_keys={CA_KEY_INDEX: ca_point},
            )
            profile.save(root / "phones" / f"{phone_name}.json")
            center.enroll(
                pan=card["pan"],
                expiry=expiry,
                account_id=card["account"],
                phone_key=ecc.encode_point(signing_key.public_key()),
                ikid=ikid,
                pin=pins[card_name],
            )
            phones.append({"name": phone_name, "card": card_name})

    manifest = {
        "version": 1,
        "created": now.isoformat(timespec="seconds"),
        "ca_key_index": CA_KEY_INDEX,
        "accounts": [a.__dict__ for a in SAMPLE_ACCOUNTS],
        "cards": cards,
        "phones": phones,
        "terminals": [t.__dict__ for t in SAMPLE_TERMINALS],
    }
    if database is not None:
        manifest["database"] = database
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Lab(root)
