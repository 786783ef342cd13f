"""Importing from transformers safely from several threads, and keeping it quiet."""

from __future__ import annotations

import threading

HF_IMPORT_LOCK = threading.RLock()
"""Held while importing from transformers: its lazy module is not safe when two threads reach a
class for the first time together (the app saw ImportError for AutoModelForCausalLM when a
tokenizer load and the warm-up started at once)."""

LOADING_MODULES = ("transformers.modeling_utils", "transformers.models.auto.modeling_auto",
                   "transformers.models.auto.tokenization_auto")
"""What loading any model imports from transformers, whatever its architecture: a process
started ahead imports them while it waits (measured: 2.2 s of a first extraction in a fresh
process, for about 145 MB more)."""


def quiet_transformers() -> None:
    """No progress bars or advice on stderr: the CLI and the app draw their own progress."""
    with HF_IMPORT_LOCK:
        from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
