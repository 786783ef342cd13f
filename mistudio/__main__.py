"""``python -m mistudio`` is the same as the ``mistudio`` command."""

from mistudio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
