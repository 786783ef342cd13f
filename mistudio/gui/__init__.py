"""The desktop app (PySide6 widgets, pyqtgraph plots) over the core library.

Nothing here holds interpretability logic: every operation is a core function run through
:class:`mistudio.gui.worker.JobRunner`. Import PySide6 before pyqtgraph (pyqtgraph picks the Qt
binding that is already loaded).
"""

from __future__ import annotations

import PySide6  # noqa: F401  (before pyqtgraph, so it binds to PySide6)
