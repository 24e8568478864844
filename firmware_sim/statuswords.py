"""ISO/IEC 7816-4 status words (SW1 SW2) as data.

Every APDU answer ends in a status word, and the phone link promises that every malformed input
gets one (hardware_notes/design.md §4).  Keeping them in one :class:`SW` enum plus a description
table means the applet, the terminal, the conformance runner and ``swipepay trace`` all name the
same numbers the same way, and a new status word is one table row, not a new ``if``.

Three families carry a count in their low bits instead of being fixed values, so they are
described by pattern (see :data:`FAMILIES`):

* ``61xx`` — T=0: ``xx`` more response bytes are waiting for GET RESPONSE,
* ``6Cxx`` — wrong Le; ``xx`` is the exact length to ask for,
* ``63Cx`` — verification failed, ``x`` tries left (EMV VERIFY and our PIN try counter).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Final

from swipepay.firmware_sim.errors import LocalError


class SW(IntEnum):
    """The fixed status words swipepay sends or expects to receive."""

    OK = 0x9000
    # 62xx / 63xx warnings
    WARNING_NO_INFORMATION = 0x6200
    DATA_MAY_BE_CORRUPTED = 0x6281
    END_OF_FILE_BEFORE_LE = 0x6282
    SELECTED_FILE_DEACTIVATED = 0x6283
    VERIFICATION_FAILED = 0x6300
    # 64xx / 65xx execution errors
    EXECUTION_ERROR = 0x6400
    MEMORY_FAILURE = 0x6581
    # 67xx .. 6Fxx checking errors
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    CHAINING_NOT_SUPPORTED = 0x6884
    COMMAND_NOT_ALLOWED = 0x6900
    COMMAND_INCOMPATIBLE_WITH_FILE = 0x6981
    SECURITY_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED_NO_EF = 0x6986
    SM_DATA_OBJECTS_MISSING = 0x6987
    SM_DATA_OBJECTS_INCORRECT = 0x6988
    WRONG_PARAMETERS = 0x6A00
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    NC_INCONSISTENT_WITH_TLV = 0x6A85
    INCORRECT_P1P2 = 0x6A86
    NC_INCONSISTENT_WITH_P1P2 = 0x6A87
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    FILE_ALREADY_EXISTS = 0x6A89
    DF_NAME_ALREADY_EXISTS = 0x6A8A
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


#: What each fixed status word means, worded as ISO/IEC 7816-4:2013 tables 5 and 6 do.
DESCRIPTIONS: Final[dict[SW, str]] = {
    SW.OK: "normal processing",
    SW.WARNING_NO_INFORMATION: "warning: no information given, non-volatile memory unchanged",
    SW.DATA_MAY_BE_CORRUPTED: "warning: part of returned data may be corrupted",
    SW.END_OF_FILE_BEFORE_LE: "warning: end of file or record reached before reading Ne bytes",
    SW.SELECTED_FILE_DEACTIVATED: "warning: selected file deactivated",
    SW.VERIFICATION_FAILED: "warning: verification failed, no information given",
    SW.EXECUTION_ERROR: "execution error: non-volatile memory unchanged",
    SW.MEMORY_FAILURE: "execution error: memory failure",
    SW.WRONG_LENGTH: "wrong length",
    SW.LOGICAL_CHANNEL_NOT_SUPPORTED: "logical channel not supported",
    SW.SECURE_MESSAGING_NOT_SUPPORTED: "secure messaging not supported",
    SW.LAST_COMMAND_OF_CHAIN_EXPECTED: "last command of the chain expected",
    SW.CHAINING_NOT_SUPPORTED: "command chaining not supported",
    SW.COMMAND_NOT_ALLOWED: "command not allowed, no information given",
    SW.COMMAND_INCOMPATIBLE_WITH_FILE: "command incompatible with file structure",
    SW.SECURITY_NOT_SATISFIED: "security status not satisfied",
    SW.AUTH_METHOD_BLOCKED: "authentication method blocked",
    SW.REFERENCE_DATA_NOT_USABLE: "reference data not usable",
    SW.CONDITIONS_NOT_SATISFIED: "conditions of use not satisfied",
    SW.COMMAND_NOT_ALLOWED_NO_EF: "command not allowed (no current EF)",
    SW.SM_DATA_OBJECTS_MISSING: "expected secure messaging data objects missing",
    SW.SM_DATA_OBJECTS_INCORRECT: "incorrect secure messaging data objects",
    SW.WRONG_PARAMETERS: "wrong parameters P1-P2, no information given",
    SW.WRONG_DATA: "incorrect parameters in the command data field",
    SW.FUNCTION_NOT_SUPPORTED: "function not supported",
    SW.FILE_NOT_FOUND: "file or application not found",
    SW.RECORD_NOT_FOUND: "record not found",
    SW.NOT_ENOUGH_MEMORY: "not enough memory space in the file",
    SW.NC_INCONSISTENT_WITH_TLV: "Nc inconsistent with TLV structure",
    SW.INCORRECT_P1P2: "incorrect parameters P1-P2",
    SW.NC_INCONSISTENT_WITH_P1P2: "Nc inconsistent with parameters P1-P2",
    SW.REFERENCED_DATA_NOT_FOUND: "referenced data or reference data not found",
    SW.FILE_ALREADY_EXISTS: "file already exists",
    SW.DF_NAME_ALREADY_EXISTS: "DF name already exists",
    SW.WRONG_P1P2: "wrong parameters P1-P2",
    SW.INS_NOT_SUPPORTED: "instruction code not supported or invalid",
    SW.CLA_NOT_SUPPORTED: "class not supported",
    SW.NO_PRECISE_DIAGNOSIS: "no precise diagnosis",
}


def _count_256(n: int) -> str:
    """SW2 = 00 in 61xx/6Cxx stands for 256 (the short-Le convention), not for zero."""
    return "256" if n == 0 else str(n)


#: Status words that carry a number: (mask, value after masking, description from the number).
#: The number is ``sw & ~mask & 0xFFFF`` (the bits the mask leaves out).
FAMILIES: Final[tuple[tuple[int, int, Callable[[int], str]], ...]] = (
    (0xFF00, 0x6100, lambda n: f"normal processing, {_count_256(n)} response bytes available"),
    (0xFF00, 0x6C00, lambda n: f"wrong Le field, exact length is {_count_256(n)}"),
    (0xFFF0, 0x63C0, lambda n: f"verification failed, {n} tries left"),
)

#: Fallback by SW1 alone for status words in no table (ISO/IEC 7816-4:2013 table 5).
SW1_CLASSES: Final[dict[int, str]] = {
    0x62: "warning: non-volatile memory unchanged",
    0x63: "warning: non-volatile memory changed",
    0x64: "execution error: non-volatile memory unchanged",
    0x65: "execution error: non-volatile memory changed",
    0x66: "execution error: security-related issue",
    0x67: "wrong length",
    0x68: "functions in CLA not supported",
    0x69: "command not allowed",
    0x6A: "wrong parameters P1-P2",
    0x6B: "wrong parameters P1-P2",
    0x6D: "instruction code not supported or invalid",
    0x6E: "class not supported",
    0x6F: "no precise diagnosis",
}


def describe(sw: int) -> str:
    """Human-readable meaning of a status word, for traces, logs and the CLI.

    Exact table entries win, then the counted families (61xx, 6Cxx, 63Cx), then the SW1 class.
    Raises :class:`LocalError` if ``sw`` is not a 16-bit value: that is a bug in the caller,
    never something a card can send (a response's SW is always two bytes).
    """
    if not 0 <= sw <= 0xFFFF:
        raise LocalError("a status word is a 16-bit value")
    text = f"{sw:04X}"
    try:
        return f"{text} {DESCRIPTIONS[SW(sw)]}"
    except ValueError:
        pass
    for mask, value, render in FAMILIES:
        if sw & mask == value:
            return f"{text} {render(sw & ~mask & 0xFFFF)}"
    sw1_class = SW1_CLASSES.get(sw >> 8)
    if sw1_class is not None:
        return f"{text} {sw1_class} (unknown SW2)"
    return f"{text} unknown status word"


def tries_left(sw: int) -> int | None:
    """The ``x`` of a ``63Cx`` answer, or ``None`` if ``sw`` is not one."""
    return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None
