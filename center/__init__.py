"""swipepay center."""
