"""The Models panel: registered models, their hook points, what fits in memory, and extraction.

Beside the hook-point browser the panel shows the memory plan for the selected model on the
device chosen in Settings (each precision and quantization with its weights, activations and
SAE-training memory, and the one recommended) and any faithfulness measured for quantized
loading (cosine of quantized against full-precision activations); "Check faithfulness" measures
it for the layer and quantization chosen in the extraction form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from mistudio.core.store.files import human_bytes
from mistudio.core.store.manifests import ActivationsSummary
from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import FittedTable, RowsModel, name_combo, refill_combo, show_error
from mistudio.gui.data_panels import ArtifactPanel

WEIGHTS = {"full precision": "none", "int8 (about 1/4 of float32)": "int8",
           "int4 (about 1/7)": "int4", "nf4 (bitsandbytes, CUDA)": "nf4",
           "8-bit (bitsandbytes, CUDA)": "bnb8"}
"""The extraction form's choices of how the model's weights are held while it runs."""


def _massive_note(summary: ActivationsSummary) -> str:
    """", 17 massive tokens left out" for an activation set's catalog summary."""
    n = summary.massive_tokens
    if not n:
        return ""
    return f", {n:,} massive token{'s' if n != 1 else ''} (attention sinks) left out"



class ModelsPanel(ArtifactPanel):
    kind = "model"
    device = "auto"
    """From the window's settings."""
    dtype_setting = "auto"
    headers = ("Name", "Family", "Parameters", "Layers", "d_model", "Context", "Device",
               "Memory (est.)")

    def __init__(self, ws: Workspace, jobs: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(ws, jobs, parent)
        embedded = QPushButton("Register the built-in models")
        embedded.setToolTip("SmolLM2-135M-Instruct, and Gemma 3 270M where its packages are "
                            "installed: they ship with miStudio, no download")
        embedded.clicked.connect(self.add_embedded)
        self.side.addWidget(embedded)
        self.set_empty_state("No models yet. Register the built-in SmolLM2-135M-Instruct and "
                             "Gemma 3 270M (they ship with miStudio: no download), or add a "
                             "model folder or a GGUF file with the buttons on the right.",
                             "Register the built-in models", self.add_embedded)
        folder = QPushButton("Add a model folder...")
        folder.clicked.connect(lambda: self.add_model(folder=True))
        gguf = QPushButton("Add a GGUF file...")
        gguf.clicked.connect(lambda: self.add_model(folder=False))
        self.side.addWidget(folder)
        self.side.addWidget(gguf)
        hub = QHBoxLayout()
        self.hub_id = QLineEdit()
        self.hub_id.setPlaceholderText("hf:OWNER/NAME (online mode)")
        hub_btn = QPushButton("Add")
        hub_btn.clicked.connect(self.add_hub_model)
        hub.addWidget(self.hub_id)
        hub.addWidget(hub_btn)
        self.side.addLayout(hub)
        ext = QGroupBox("Extract activations")
        f = QFormLayout(ext)
        self.model_box = name_combo()
        self.dataset = name_combo()
        self.layer = QSpinBox(minimum=0, maximum=200, value=15)
        self.more_layers = QLineEdit()
        self.more_layers.setPlaceholderText("more layers, e.g. 6, 12")
        self.batch = QSpinBox(minimum=1, maximum=512, value=8)
        self.dtype = QComboBox()
        self.dtype.addItems(["float16", "float32"])
        self.hook = QComboBox()
        self.hook.addItems(["resid_post", "resid_pre", "mlp_in", "mlp_out", "attn_out"])
        self.max_tokens = QSpinBox(minimum=1000, maximum=100_000_000, value=100_000,
                                   singleStep=10_000)
        self.weights = QComboBox()
        self.weights.setToolTip("How the model's weights are held while it runs: int8 and int4 "
                                "fit larger models (check what they cost with \"Check "
                                "faithfulness\"); the choice is recorded with the activations.")
        go = QPushButton("Extract")
        go.clicked.connect(self.extract)
        for label, w in (("Model", self.model_box), ("Dataset", self.dataset),
                         ("Layer", self.layer), ("Also layers", self.more_layers),
                         ("Hook point", self.hook), ("Max tokens", self.max_tokens),
                         ("Batch (sequences)", self.batch), ("Stored as", self.dtype),
                         ("Model weights", self.weights)):
            f.addRow(label, w)
        f.addRow(go)
        check = QPushButton("Check faithfulness")
        check.setToolTip("Compare the chosen quantization's activations at this layer with full "
                         "precision on 2,048 tokens of the built-in corpus.")
        check.clicked.connect(self.check_faithfulness)
        row = QHBoxLayout()
        row.addWidget(check)
        row.addWidget(self._import_button())
        f.addRow(row)
        self.side.addWidget(ext)
        self.acts = QLabel("")
        self.acts.setWordWrap(True)
        self.side.addWidget(self.acts)
        self.side.addStretch(1)
        self.hooks_model = RowsModel(("Layer",))
        self.hooks = FittedTable()
        self.hooks.setModel(self.hooks_model)
        self.hooks.clicked.connect(self.pick_hook)
        self.hooks.setToolTip("Hook points of the selected model: click one to extract it.")
        self.main.addWidget(self.hooks)
        self.memory = QPlainTextEdit()
        self.memory.setReadOnly(True)
        self.memory.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.memory.setToolTip("What fits: the selected model on the device chosen in Settings.")
        self.main.addWidget(self.memory)
        self.table.clicked.connect(lambda _: self.show_hooks())
        self.refresh()

    def refresh(self) -> None:
        super().refresh()
        if hasattr(self, "hooks") and self.model.rows:
            if not self.table.selectionModel().selectedRows():
                self.table.selectRow(0)
            self.show_hooks()

    def show_hooks(self) -> None:
        """The hook-point browser: layers x hook points of the selected model."""
        from mistudio.core.models.registry import model_info

        idx = self.table.selectionModel().selectedRows()
        if not idx:
            return
        name = self.model.rows[idx[0].row()][0]
        info = model_info(self.ws, name)
        # each cell: the width of the vector read there (an SAE's input size); the key in full
        # in its tooltip (a cell of "layers.12.resid_post" cut every column to "layers.1...")
        widths = {h: info.d_attn if h == "attn_z" else info.d_model for h in info.hook_points}
        self.hooks_model.headers = ["Layer", *info.hook_points]
        self.hooks_model.tips = [[f"layer {layer}", *(
            f"layers.{layer}.{h}: {widths[h]} values per token; click to extract it"
            for h in info.hook_points)] for layer in range(info.n_layers)]
        self.hooks_model.set_rows([[layer, *(widths[h] for h in info.hook_points)]
                                   for layer in range(info.n_layers)])
        self.hooks.fit()
        self.model_box.setCurrentText(name)
        self.layer.setMaximum(info.n_layers - 1)
        self.memory.setPlainText(memory_text(self.ws, name, info, self.device))

    def pick_hook(self, index: Any) -> None:
        if index.column() == 0:
            return
        self.layer.setValue(int(self.hooks_model.rows[index.row()][0]))
        self.hook.setCurrentText(self.hooks_model.headers[index.column()])

    def rows(self) -> list[list[Any]]:
        from mistudio.core.models.devices import resolve_device
        from mistudio.core.runtime.errors import MiStudioError

        try:
            cuda = resolve_device(self.device).type == "cuda"
        except MiStudioError:
            cuda = False
        refill_combo(self.weights, [w for w, q in WEIGHTS.items()
                                    if cuda or q not in ("nf4", "bnb8")])
        models = self.ws.catalog.list("model")
        refill_combo(self.model_box, [m.name for m in models])
        refill_combo(self.dataset, [d.name for d in self.ws.catalog.list("dataset")])
        sets = self.ws.catalog.list("activations")
        self.acts.setText("Activation sets:\n" + "\n".join(
            f"  {a.name}: {a.summary.tokens:,} tokens, "
            f"{human_bytes(a.summary.bytes)} ({a.status})" + _massive_note(a.summary)
            for a in sets) if sets else "No activation sets yet.")
        from mistudio.core.models.devices import estimate_model_bytes, resolve_device, resolve_dtype
        from mistudio.core.runtime.errors import MiStudioError

        try:  # where the Settings menu's device and dtype would load the models
            device = resolve_device(self.device)
            dtype = resolve_dtype(self.dtype_setting, device)
            where = f"{device.type} ({str(dtype).removeprefix('torch.')})"
        except MiStudioError:  # e.g. cuda chosen on a machine without one
            device, dtype, where = None, None, f"{self.device}: not available"
        return [[m.name, m.summary.family, f"{m.summary.n_params / 1e6:.1f}M",
                 m.summary.n_layers, m.summary.d_model, m.summary.max_context, where,
                 human_bytes(estimate_model_bytes(m.summary.n_params, dtype))
                 if dtype is not None else "-"] for m in models]

    def add_embedded(self) -> None:
        self.runner.start("add_builtin_models")

    def add_hub_model(self) -> None:
        from mistudio.core.runtime.online import is_online

        repo = self.hub_id.text().strip()
        if not repo:
            return
        if not is_online():
            show_error(self, "Adding a model from the Hugging Face hub needs online mode. "
                       "Turn it on in Settings, or add a folder or GGUF file instead.")
            return
        source = repo if repo.startswith("hf:") else f"hf:{repo}"
        name = repo.removeprefix("hf:").split("/")[-1].replace(".", "-")[:40]
        self.runner.start("add_model", name, source, title=f"Registering {name}")

    def add_model(self, folder: bool, path: str | None = None) -> None:
        if path is None:
            path = (QFileDialog.getExistingDirectory(self, "Hugging Face model folder")
                    if folder else QFileDialog.getOpenFileName(
                        self, "GGUF model", str(Path.home()), "GGUF (*.gguf)")[0])
        if not path:
            return
        name = Path(path).stem.replace(" ", "-").replace(".", "-")[:40]
        self.runner.start("add_model", name, path, title=f"Registering {name}")

    def extract(self) -> None:
        from mistudio.core.activations.extraction import ExtractConfig

        model, ds = self.model_box.currentText(), self.dataset.currentText()
        if not model or not ds:
            show_error(self, "Choose a model and a dataset (add them first).")
            return
        try:
            extra = [int(x) for x in self.more_layers.text().replace(",", " ").split()]
        except ValueError:
            show_error(self, "Write the other layers as numbers separated by commas (6, 12).")
            return
        layers = tuple(sorted({self.layer.value(), *extra}))
        cfg = ExtractConfig(model, ds, layers, (self.hook.currentText(),),
                            max_tokens=self.max_tokens.value(),
                            batch_sequences=self.batch.value(),
                            dtype=self.dtype.currentText(),  # type: ignore[arg-type]
                            device=self.device, model_dtype=self.dtype_setting,
                            quantize=WEIGHTS[self.weights.currentText()])
        name = f"{ds}.{model}.{'-'.join(map(str, layers))}.{self.hook.currentText()}"
        if cfg.quantize != "none":
            name += f".{cfg.quantize}"
        self.runner.start("extract", cfg, name, title=f"Extracting {name}")

    def _import_button(self) -> QPushButton:
        """Activations another tool made, as a set to train on (no model needed)."""
        btn = QPushButton("Import activations…")
        btn.setToolTip("Rows made elsewhere: a .npy, .npz, .safetensors or .arrow file of "
                       "[rows, width], or the folder SAELens's activation cache was saved in. "
                       "Train SAEs on them in the Training tab.")
        menu = QMenu(btn)
        menu.addAction("A file (.npy, .npz, .safetensors, .arrow)…",
                       lambda: self.import_activations(folder=False))
        menu.addAction("A SAELens cache folder…", lambda: self.import_activations(folder=True))
        btn.setMenu(menu)
        return btn

    def import_activations(self, folder: bool, path: str | None = None) -> None:
        from mistudio.core.activations.importing import ImportConfig
        from mistudio.core.runtime.errors import MiStudioError

        if path is None:
            path = (QFileDialog.getExistingDirectory(self, "SAELens activation cache")
                    if folder else QFileDialog.getOpenFileName(
                        self, "Activations", str(Path.home()),
                        "Activations (*.npy *.npz *.safetensors *.arrow)")[0])
        if not path:
            return
        try:
            cfg = ImportConfig(path)
        except MiStudioError as err:
            show_error(self, err)
            return
        taken = {a.name for a in self.ws.catalog.list("activations")}
        stem = Path(path).stem.replace(" ", "-")[:40] or "imported"
        name = next(n for n in (stem, *(f"{stem}-{i}" for i in range(2, 1000)))
                    if n not in taken)
        self.runner.start("import_activations", cfg, name, title=f"Importing {name}")

    def check_faithfulness(self) -> None:
        model = self.model_box.currentText()
        quantize = WEIGHTS[self.weights.currentText()]
        if not model:
            show_error(self, "Choose a model first (register the embedded one, or add one).")
            return
        if quantize == "none":
            quantize = "int8"  # the question only makes sense for a quantization: the usual one
        layer, hook = self.layer.value(), self.hook.currentText()
        self.runner.start("faithfulness", model, quantize, layer, hook, device=self.device,
                          title=f"Checking {quantize} on {model}")


def memory_text(ws: Workspace, name: str, info: Any, device_setting: str) -> str:
    """The memory plan for ``name`` on the settings' device, then any faithfulness measured."""
    from mistudio.core.activations.faithfulness import faithfulness_line, known_faithfulness
    from mistudio.core.models.devices import resolve_device
    from mistudio.core.runtime.errors import MiStudioError
    from mistudio.core.workflows.planner import plan_memory, plan_text

    try:
        plan = plan_text(plan_memory(info, resolve_device(device_setting)))
    except MiStudioError as e:  # e.g. cuda chosen in Settings on a machine without one
        plan = f"No memory plan: {e}"
    lines = [f"{name}: {info.n_params / 1e9:.2f}B parameters, {info.n_layers} layers, d_model "
             f"{info.d_model}. Extraction loads only the blocks up to the deepest layer read.",
             plan, ""]
    measured = known_faithfulness(ws, name)
    lines += ([faithfulness_line(r) for r in measured] if measured else
              ["Quantized activations not compared with full precision yet: choose a "
               "quantization under Model weights and press Check faithfulness."])
    return "\n".join(lines)
