"""``python -m swipepay`` runs the ``swipepay`` command."""

from swipepay.cli.main import main

if __name__ == "__main__":
    main()
