"""miStudio (MechInterp Studio): a local workbench for mechanistic interpretability.

Importing the package switches the Hugging Face libraries to offline mode before any of them
is imported (they read these variables once, at import). Online mode is opt-in: see
:func:`mistudio.core.runtime.online.set_online`.
"""

from mistudio.core.runtime.online import apply_offline_default

__version__ = "0.1.0"

apply_offline_default()
