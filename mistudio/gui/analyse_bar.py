"""Analysing an SAE from the app: the row that makes a feature analysis, and the Features tab's
empty state (what to do next, with the buttons that do it).

The analysis itself (``mistudio.core.features.analysis.analyze``) runs in a child process
through the Features panel's worker, with progress, an estimate and cancel in the status bar.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.store.workspace import Workspace
from mistudio.gui.common import name_combo, refill_combo

OWN_SET = "its training set"
"""The activations choice meaning: the set the SAE was trained on."""


class AnalyseBar(QWidget):
    """SAE, activations, tokens and an Analyse button."""

    analyseRequested = Signal(str, str, int)
    """(SAE, activation set or "" for the SAE's own, tokens to analyse)."""

    def __init__(self, ws: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ws = ws
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.sae = name_combo()
        self.sae.setMinimumContentsLength(14)
        self.sae.currentTextChanged.connect(self._sae_changed)
        self.acts = name_combo()
        self.acts.setMinimumContentsLength(12)
        self.acts.setToolTip("The activations to find each feature's top examples in. An "
                             "imported SAE has no training set here: pick one of its hook point.")
        self.tokens = QSpinBox(minimum=1_000, maximum=10_000_000, singleStep=10_000,
                               value=100_000)
        self.tokens.setSuffix(" tokens")
        self.go = QPushButton("Analyse")
        self.go.setToolTip("Top examples, logit lens, neighbours and automatic pattern labels "
                           "of every feature. Labels written by hand are kept.")
        self.go.clicked.connect(self._request)
        for w in (QLabel("Analyse SAE"), self.sae, QLabel("on"), self.acts, self.tokens,
                  self.go):
            row.addWidget(w)
        row.addStretch(1)

    def refresh(self) -> None:
        saes = [a for a in self.ws.catalog.list("sae") if a.status == "complete"]
        refill_combo(self.sae, [a.name for a in saes])
        refill_combo(self.acts, [OWN_SET, *(a.name for a in self.ws.catalog.list("activations")
                                             if a.status == "complete")])
        self._sae_changed(self.sae.currentText())
        self.setEnabled(bool(saes))

    def select(self, sae: str) -> None:
        if self.sae.findText(sae) >= 0:
            self.sae.setCurrentText(sae)

    def _sae_changed(self, sae: str) -> None:
        done = self.ws.catalog.find("features", sae) is not None
        self.go.setText("Analyse again" if done else "Analyse")

    def _request(self) -> None:
        acts = self.acts.currentText()
        self.analyseRequested.emit(self.sae.currentText(), "" if acts == OWN_SET else acts,
                                   self.tokens.value())


class EmptyFeatures(QWidget):
    """What the Features tab shows before any analysis exists."""

    quickStartRequested = Signal()
    trainRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        self.text = QLabel("")
        self.text.setWordWrap(True)
        v.addWidget(self.text)
        row = QHBoxLayout()
        self.quick = QPushButton("Run the quick start")
        self.quick.clicked.connect(self.quickStartRequested)
        self.train = QPushButton("Go to Training")
        self.train.clicked.connect(self.trainRequested)
        row.addWidget(self.quick)
        row.addWidget(self.train)
        row.addStretch(1)
        v.addLayout(row)
        v.addStretch(1)

    def show_state(self, have_saes: bool) -> None:
        self.text.setText(
            "No feature analysis yet. Pick an SAE above and press Analyse: every feature gets "
            "its top examples, logit lens and a label (a few minutes for 100,000 tokens)."
            if have_saes else
            "No feature analysis yet, and no SAE to analyse. Train one in the Training tab, or "
            "let the quick start do everything (about six minutes on two CPU cores).")
        self.train.setVisible(not have_saes)
