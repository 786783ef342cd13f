"""The desktop app (PySide6 widgets, pyqtgraph plots) over the core library.

Nothing here holds interpretability logic: every operation is a core job run through the
window's job center (:mod:`mistudio.gui.jobs` over :mod:`mistudio.core.jobs`). Import PySide6
before pyqtgraph (pyqtgraph picks the Qt binding that is already loaded).
"""

from __future__ import annotations

import PySide6  # noqa: F401  (before pyqtgraph, so it binds to PySide6)


def _skip_pyside_source_checks() -> None:
    """PySide6 hooks every import and reads the source of each imported module (looking for
    ``from __feature__``), on whatever thread imports it. With imports on worker threads (the
    app's jobs import transformers, scikit-learn, numba lazily) this raced: an ImportError for
    transformers' AutoModelForCausalLM, and once a hung test. miStudio selects no ``__feature__``,
    so the check is switched off; PySide6 versions without it are left alone."""
    try:
        from shibokensupport import feature  # type: ignore[import-not-found]
    except ImportError:
        return
    if hasattr(feature, "_mod_uses_pyside"):
        feature._mod_uses_pyside = lambda _module: False


_skip_pyside_source_checks()
