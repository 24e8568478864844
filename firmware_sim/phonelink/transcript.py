"""The transcript both ends hash: it binds keys, signatures and key confirmation to this session.

* after CONNECT: H1 = Transcript(AID, CONNECT body, CONNECT answer) — the salt of the key
  schedule and what the terminal signs with its certified key;
* after AUTHENTICATE: H2 = Transcript(H1, AUTHENTICATE body) — what key confirmation covers.
"""

from __future__ import annotations

from swipepay.firmware_sim.phonelink.protocol import AID
from swipepay.firmware_sim.secure_channel import Transcript


def connect_transcript(connect_body: bytes, connect_answer: bytes, aid: bytes = AID) -> bytes:
    """H1 over the AID that was selected and the CONNECT exchange."""
    t = Transcript()
    t.add(b"aid", aid)
    t.add(b"connect", connect_body)
    t.add(b"connect-answer", connect_answer)
    return t.digest()


def auth_transcript(connect_digest: bytes, auth_body: bytes) -> bytes:
    t = Transcript()
    t.add(b"h1", connect_digest)
    t.add(b"authenticate", auth_body)
    return t.digest()


def response_aad(command_header: bytes) -> bytes:
    """AAD of a sealed response: ``R`` + the header of the command it answers."""
    return b"R" + command_header
