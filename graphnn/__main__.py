"""``python -m graphnn``: the same command line as the ``graphnn`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
