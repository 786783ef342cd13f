"""``python -m mistudio`` is the same as the ``mistudio`` command (and the bundle's entry)."""

import multiprocessing

from mistudio.cli import main

if __name__ == "__main__":
    # In a PyInstaller bundle a spawned child (the app's in-model evaluation) starts this same
    # executable: freeze_support makes it run the child's work instead of a second app.
    multiprocessing.freeze_support()
    raise SystemExit(main())
