"""The core's messages in the app's words: its fixes name command-line flags (the CLI and the app
share one core), and a dialog that says "--batch-size" leaves a newcomer at a dead end. Each
flag that can reach a dialog is mapped to the control that does the same; flags of work the
app does not offer (multi-node training, the doctor's self-test) are listed as CLI-only and
left as they are. A test reads every flag in the core's sources and checks it is one or the
other, so a new flag cannot slip into a dialog unexplained.
"""

from __future__ import annotations

import re

APP_CONTROLS = {
    "--overwrite": "another name (or remove the old one in its tab first)",
    "--name": "the Name field",
    "--batch-size": "Batch (tokens) under Training > Advanced",
    "--grad-accumulation": "a smaller Batch (tokens) under Training > Advanced",
    "--k": "k (active latents) in the Training tab",
    "--expansion": "Expansion in the Training tab",
    "--arch": "Architecture in the Training tab",
    "--target-l0": "k (active latents) in the Training tab",
    "--activations": "the Activations choice",
    "--sae": "an SAE in the Steering tab's feature list",
    "--feature": "a feature in the Features tab",
    "--model": "the Model choice",
    "--hook": "the hook point in the import dialog",
    "--layer": "Layer in the Models tab's Extract form",
    "--quantize": "Model weights in the Models tab",
    "--dtype": "Settings > Model dtype",
    "--model-dtype": "Settings > Model dtype",
    "--device": "Settings > Device",
    "--online": "Settings > Allow online downloads",
    "--prompt": "the Prompt box",
    "--max-tokens": "Max tokens in the Steering tab",
    "--temperature": "Temperature in the Steering tab",
    "--top-p": "Top-p in the Steering tab",
    "--top-k": "Top-p in the Steering tab",
    "--tokens": "the tokens count next to Analyse (Features tab)",
    "--top": "the number next to Describe top",
    "--explainer": "the Describe menu",
    "--endpoint": "the Describe menu's endpoint",
    "--source": "the dataset dialog (Datasets > Any source, with a preview)",
    "--split": "the dataset dialog's Split field",
    "--text-column": "the dataset dialog's Text column",
    "--max-samples": "Max documents in the Datasets tab",
    "--context-length": "Context length in the Datasets tab",
    "--prepend-bos": "\"Start each sequence with BOS\" in the Datasets tab",
    "--massive-factor": "the massive-token factor (CLI: --massive-factor)",
    "--keep-massive": "the CLI's --keep-massive (the app leaves massive tokens out)",
    "--workspace": "File > Open workspace",
    "--trust-remote-code": "the model folder's own code (CLI: --trust-remote-code)",
    "--release": "File > Pretrained SAEs",
    "--format": "File > Export SAE",
    "--out": "File > Export SAE",
    "--mode": "the Describe menu",
    "--skip": "the skip connection (CLI: --skip)",
    "--ghost-grads": "the CLI's --ghost-grads",
    "--hf-config": "the model folder's config (CLI: --hf-config)",
}
"""Flag -> the app's control (or an honest pointer where the app has none)."""

CLI_ONLY = frozenset({"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr",
                      "--no-deps", "--self-test"})
"""Flags of work the app does not do (multi-process training, installing, the doctor)."""

_FLAG = re.compile(r"`?(--[a-z][a-z0-9-]*)(?:[ =][A-Z][A-Z_]*)?`?")


def in_app_words(message: str) -> str:
    """``message`` with each mapped flag (and its metavar) replaced by the app's control."""
    def swap(m: re.Match[str]) -> str:
        flag = m.group(1)
        return APP_CONTROLS.get(flag, m.group(0)) if flag not in CLI_ONLY else m.group(0)

    return _FLAG.sub(swap, message)
