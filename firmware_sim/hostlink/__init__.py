"""The terminal <-> center link: the ISO 8583 mapping both sides use."""
