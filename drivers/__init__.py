"""swipepay drivers."""
