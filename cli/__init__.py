"""swipepay cli."""
