"""The phone link (hardware_notes/design.md §4): terminal = reader, phone = card, short APDUs only.

``protocol`` holds the byte layout as tables, ``applet`` is the phone side, ``terminal_link``
the terminal side; both are sans-IO objects joined in tests through an in-memory link.
"""
