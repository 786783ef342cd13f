"""The "Label evidence" tab: the held-out windows a feature's label was scored on, those it got
right and those it got wrong, each a heatmap of the feature's activations (the core reads
them: :func:`mistudio.core.features.evidence.label_evidence`)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.features.examples import TokenText
from mistudio.gui.token_view import TokenHeatmap


def _verdict(w: Any) -> str:
    fires = "fires here" if w.fires else ("silent (hard: its usual tokens)" if w.hard
                                          else "silent")
    if w.said is None:
        return fires
    return f"{fires}; the label says {'it fires' if w.said else 'silent'}"


class EvidenceView(QWidget):
    showRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        v = QVBoxLayout(self)
        top = QHBoxLayout()
        self.show_button = QPushButton("Show the held-out windows")
        self.show_button.setToolTip("Windows of text the label never saw: where the feature fires "
                                    "and where it is silent, and what the label's rule says")
        self.show_button.clicked.connect(self.showRequested.emit)
        top.addWidget(self.show_button)
        top.addStretch(1)
        v.addLayout(top)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.summary)
        body = QWidget()
        self.body = QVBoxLayout(body)
        self.groups: dict[str, QVBoxLayout] = {}
        for key, title in (("passed", "Got right"), ("failed", "Got wrong"),
                           ("unjudged", "Windows (no rule to execute)")):
            group = QGroupBox(title)
            self.groups[key] = QVBoxLayout(group)
            self.body.addWidget(group)
        self.body.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        v.addWidget(scroll, 1)
        self.heatmaps: list[TokenHeatmap] = []
        self.clear_evidence()  # empty groups hidden: the tab asks for no height it does not use

    def clear_evidence(self) -> None:
        self.summary.setText("")
        for box in self.groups.values():
            while box.count():
                item = box.takeAt(0)
                if item.widget() is not None:
                    item.widget().hide()
                    item.widget().deleteLater()
            box.parentWidget().setVisible(False)
        self.heatmaps = []

    def show_evidence(self, ev: Any, text: TokenText, peak: float) -> None:
        self.clear_evidence()
        lines = [f"Label: {ev.label}"]
        if ev.formula:
            lines.append(f"Rule: {ev.formula}")
        if ev.detection is not None:
            fuzz = "" if ev.fuzzing is None else f", fuzzing {ev.fuzzing:.2f}"
            lines.append(f"Held-out detection {ev.detection:.2f}{fuzz} (0.5 is chance).")
        if ev.note:
            lines.append(ev.note)
        self.summary.setText("\n".join(lines))
        for key, windows in (("passed", ev.passed), ("failed", ev.failed),
                             ("unjudged", ev.unjudged)):
            box = self.groups[key]
            box.parentWidget().setVisible(bool(windows))
            for w in windows:
                heat = TokenHeatmap()
                heat.set_tokens(text.many(w.token_ids), w.activations, -1, peak)
                heat.setToolTip(_verdict(w))
                row = QWidget()
                line = QHBoxLayout(row)
                line.setContentsMargins(0, 0, 0, 0)
                tag = QLabel("fires" if w.fires else "silent")
                tag.setToolTip(_verdict(w))
                tag.setFixedWidth(tag.fontMetrics().horizontalAdvance("silent00"))
                line.addWidget(tag)
                line.addWidget(heat, 1)
                box.addWidget(row)
                self.heatmaps.append(heat)
