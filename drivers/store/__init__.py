"""What the terminal and phone programs keep on disk: one store per program, one file layout."""
