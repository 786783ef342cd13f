"""Help > Lesson: one flow for a class period, in large type.

1. Train: what an SAE is, in two sentences, beside the live curves of a run sized to about
   four and a half minutes on this machine (:func:`mistudio.core.workflows.lesson.run_lesson`).
2. Features: the most interpretable first (label score, then variety).
3. Steer: a large prompt box for the audience's prompts, the coefficient the quick start's
   sweep found fluent (perplexity within 2x of unsteered), and a slider to push further.

Training runs in a child process, generation in the model's service (the one the Steering tab
uses), through the window's job center.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from mistudio.core.store.workspace import Workspace
from mistudio.core.workflows.results import QuickstartResult
from mistudio.gui.common import show_error
from mistudio.gui.dashboard import Dashboard
from mistudio.gui.jobs import AppJobs

LESSON_FONT = 1.5
"""Text size relative to the app's (the back row must read it)."""
WHAT_IS_AN_SAE = (
    "A language model thinks in long lists of numbers. A sparse autoencoder rewrites each list "
    "as a few active \"features\" out of thousands it learns, and each feature tends to mean "
    "one thing a person can name: that makes the model's thinking readable, and steerable.")


def _big(widget: QWidget, name: str) -> QWidget:
    """A widget the lesson's style sheet draws larger (``title`` or ``prompt``)."""
    widget.setObjectName(name)
    return widget


def lesson_style(app_point_size: float) -> str:
    """The lesson's type as a style sheet: presentation mode's sets one size on every widget,
    which overrode fonts set on the lesson's widgets (its large type vanished); a sheet set on
    the lesson window wins over the application's for everything inside it."""
    body = app_point_size * LESSON_FONT
    return (f"QWidget {{ font-size: {body:.1f}pt; }}\n"
            f"QLabel#title {{ font-size: {body * 1.3:.1f}pt; font-weight: bold; }}\n"
            f"QPlainTextEdit#prompt {{ font-size: {body * 1.2:.1f}pt; }}")


STUDENT_STATUS = (
    ("Registering", "Getting the model ready."),
    ("Adding the built-in corpus", "Fetching the text the model will read."),
    ("Tokeniz", "Cutting the text into tokens, the pieces the model reads."),
    ("Dequantiz", "Unpacking the model's weights (first time only)."),
    ("Reading the tokenizer", "Unpacking the model's vocabulary (first time only)."),
    ("Writing the dequantized", "Saving the unpacked model for next time."),
    ("Loading", "Loading the model."),
    ("Extract", "The model is reading the text; we record what it computes at one layer."),
    ("Timing", "Timing a few training steps to size the lesson to this computer."),
    ("Evaluat", "Checking the autoencoder inside the model."),
    ("Analys", "Finding the texts that make each feature fire."),
    ("Labell", "Naming the features from the texts they fire on."),
    ("Steer", "Trying a few features and strengths to find one that steers clearly."),
)
"""The job's status lines in words for a class (the first match of its start)."""


def student_words(status: str) -> str | None:
    """A status line said for students; None for the trainer's metric lines (the curves and
    :func:`training_words` say those)."""
    if status.startswith(("step ", "lesson-topk: step")):
        return None
    for start, words in STUDENT_STATUS:
        if status.startswith(start):
            return words
    return status


def training_words(row: dict[str, Any], total: int) -> str:
    """One training row for students: the step, and how much of the model's activity the
    autoencoder already rebuilds."""
    ev = row.get("explained_variance")
    share = f" It now rebuilds {max(ev, 0.0):.0%} of what the model computes there." \
        if isinstance(ev, float) else ""
    of = f" of {total:,}" if total else ""
    return f"Training: step {int(row.get('step', 0)):,}{of}.{share}"


class LessonWindow(QWidget):
    """Train, meet the features, steer: one button at a time."""

    steered = Signal(str, str)
    """(unsteered, steered) texts of the last generation."""

    def __init__(self, ws: Workspace, device: str = "auto",
                 options: dict[str, Any] | None = None, jobs: AppJobs | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("miStudio lesson")
        self.ws, self.device = ws, device
        self.options = options or {}
        """Overrides of the quick start's defaults and the training time (tests)."""
        self._restyle()
        self._own_jobs = None if jobs is not None else AppJobs(ws.root, self)
        jobs = jobs or self._own_jobs
        self.runner = jobs.runner("lesson", self)
        self.runner.partial.connect(self._partial)
        self.runner.status.connect(self._status)
        self.runner.finished.connect(self._trained)
        self.runner.failed.connect(lambda m, d: (show_error(self, m, d),
                                                 self.start_button.setEnabled(True)))
        self.runner.cancelled.connect(self._stopped)
        self.runner.running_changed.connect(lambda running: (
            self.cancel_button.setEnabled(running), self.start_button.setEnabled(not running)))
        self.steer_runner = jobs.runner("lesson steering", self)
        self.steer_runner.finished.connect(self._generated)
        self.steer_runner.failed.connect(lambda m, d: show_error(self, m, d))
        self.steer_runner.partial.connect(self._streamed)
        self.steer_runner.cancelled.connect(lambda: self.note.setText("Stopped."))
        self.steer_runner.running_changed.connect(self._generating)
        self._total_steps = 0
        self.result: QuickstartResult | None = None
        self.started_at = 0.0
        self.pages = QStackedWidget()
        for page in (self._train_page(), self._features_page(), self._steer_page()):
            self.pages.addWidget(page)
        QVBoxLayout(self).addWidget(self.pages)
        self.pages.currentChanged.connect(lambda i: i == 2 and self._steer_shown())
        self.resize(1280, 720)

    # -- 1. train -------------------------------------------------------------------------------
    def _train_page(self) -> QWidget:
        w = QWidget()
        row = QHBoxLayout(w)
        left = QVBoxLayout()
        title = _big(QLabel("1. Train a sparse autoencoder"), "title")
        text = QLabel(WHAT_IS_AN_SAE)
        text.setWordWrap(True)
        self.status = QLabel("About four and a half minutes of training, sized to this "
                             "computer, after the model reads its text.")
        self.status.setWordWrap(True)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.setToolTip("Stop the lesson's training; Start continues it later")
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        for x in (title, text, self.status):
            left.addWidget(x)
        left.addLayout(buttons)
        left.addStretch(1)
        row.addLayout(left, 2)
        self.dashboard = Dashboard()
        # the curves only: the status on the left says the figures in words, and the note on
        # held-out figures is for researchers (with it the page outgrew a 720-pixel projector)
        self.dashboard.summary.hide()
        self.dashboard.note.hide()
        row.addWidget(self.dashboard, 3)
        return w

    def start(self) -> None:
        from mistudio.core.workflows.lesson import LESSON_SECONDS
        from mistudio.core.workflows.quickstart import QuickstartConfig

        options = dict(self.options)
        seconds = float(options.pop("seconds", LESSON_SECONDS))
        cfg = QuickstartConfig(**{"device": self.device, **options})
        self.dashboard.reset(None, "lesson")
        self.started_at = time.perf_counter()
        self.start_button.setEnabled(False)
        self.runner.start("lesson", seconds=seconds, cfg=cfg)

    def _stopped(self) -> None:
        self.status.setText("Stopped. Press Start to go on: what was done is kept.")
        self.start_button.setEnabled(True)

    def reopen(self) -> None:
        """Shown again (Help > Lesson): back at the first step unless a lesson is running."""
        if self.runner.running or self.steer_runner.running:
            return
        self.pages.setCurrentIndex(0)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _partial(self, items: list[Any]) -> None:
        rows = []
        for it in items:
            if isinstance(it, dict) and "lesson_steps" in it:
                self._total_steps = int(it["lesson_steps"])
                self.dashboard.reset(self._total_steps, "lesson")
            elif isinstance(it, dict):
                rows.append(it)
        if rows:
            self.dashboard.add_rows(rows)
            if "step" in rows[-1]:
                self.status.setText(training_words(rows[-1], self._total_steps))

    def _trained(self, result: QuickstartResult) -> None:
        from mistudio.core.workflows.lesson import lesson_features

        self.result = result
        self.features.clear()
        demo = result.steering.feature if result.steering else None
        for f in lesson_features(self.ws, result.features.name):
            item = QListWidgetItem(f"{f.label}    ({f.family}; feature {f.feature}, fires on "
                                   f"{f.frequency:.1%} of tokens, score {f.score:.2f})")
            item.setData(Qt.ItemDataRole.UserRole, f.feature)
            item.setData(Qt.ItemDataRole.UserRole + 1, f.label)
            self.features.addItem(item)
            if f.feature == demo:
                self.features.setCurrentItem(item)
        if self.features.currentRow() < 0 and self.features.count():
            self.features.setCurrentRow(0)
        self.pages.setCurrentIndex(1)

    # -- 2. features ----------------------------------------------------------------------------
    def _features_page(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        v.addWidget(_big(QLabel("2. What the features mean"), "title"))
        hint = QLabel("Each line is one feature and the automatic label of what it fires on, "
                      "most clearly labelled first. Pick one to steer the model with.")
        hint.setWordWrap(True)
        v.addWidget(hint)
        self.features = QListWidget()
        # long labels wrap: a list scrolling sideways hides the end of a label from the room
        self.features.setWordWrap(True)
        self.features.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.features.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        v.addWidget(self.features, 1)
        go = QPushButton("Steer with this feature")
        go.clicked.connect(lambda: self.pages.setCurrentIndex(2))
        v.addWidget(go)
        return w

    # -- 3. steer -------------------------------------------------------------------------------
    def _steer_page(self) -> QWidget:
        w = QWidget()
        v = QVBoxLayout(w)
        v.addWidget(_big(QLabel("3. Steer the model"), "title"))
        self.steering_what = QLabel("")  # which feature, in words
        self.steering_what.setWordWrap(True)
        v.addWidget(self.steering_what)
        v.addWidget(QLabel("A prompt from the audience (both sides continue it):"))
        self.prompt = _big(QPlainTextEdit("The most important thing about Python is"), "prompt")
        self.prompt.setMaximumHeight(self.prompt.fontMetrics().height() * 4)
        v.addWidget(self.prompt)
        row = QHBoxLayout()
        self.strength = QSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(5, 80)  # tenths of the feature's largest activation
        self.strength.valueChanged.connect(self._strength_changed)
        self.strength_label = QLabel("")
        row.addWidget(QLabel("Strength"))
        row.addWidget(self.strength, 1)
        row.addWidget(self.strength_label)
        self.generate_button = QPushButton("Generate")
        self.generate_button.clicked.connect(self.generate)
        row.addWidget(self.generate_button)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop generating (what was written stays)")
        self.stop_button.clicked.connect(self.steer_runner.cancel)
        self.stop_button.setEnabled(False)
        row.addWidget(self.stop_button)
        v.addLayout(row)
        sides = QHBoxLayout()
        self.plain_text, self.steered_text = QPlainTextEdit(), QPlainTextEdit()
        for title, box in (("Unsteered", self.plain_text), ("Steered", self.steered_text)):
            box.setReadOnly(True)
            col = QVBoxLayout()
            col.addWidget(QLabel(title))
            col.addWidget(box, 1)
            sides.addLayout(col, 1)
        v.addLayout(sides, 1)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        v.addWidget(self.note)
        back = QPushButton("Back to the features")
        back.clicked.connect(lambda: self.pages.setCurrentIndex(1))
        v.addWidget(back, 0, Qt.AlignmentFlag.AlignLeft)
        return w

    def _steer_shown(self) -> None:
        steer = self.result.steering if self.result else None
        self.strength.setValue(round(10 * (steer.coefficient_x_max if steer else 1.0)))
        if steer and steer.prompt:
            self.prompt.setPlainText(steer.prompt)
        item = self.features.currentItem()
        label = item.data(Qt.ItemDataRole.UserRole + 1) if item is not None else None
        feature = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        self.steering_what.setText(
            f"Steering with feature {feature}, which fires on {label}. The steered side adds "
            "more of it to the model's thinking at every new word." if item is not None
            else "Pick a feature on the previous page first.")

    def _strength_changed(self, value: int) -> None:
        steer = self.result.steering if self.result else None
        fluent = steer.coefficient_x_max if steer else 0.0
        x = value / 10
        tag = " (stays fluent)" if fluent and x <= fluent else \
            " (past the fluent setting)" if fluent else ""
        self.strength_label.setText(f"{x:.1f} x max{tag}")

    def generate(self) -> None:
        from mistudio.core.steering.generate import GenerationConfig
        from mistudio.core.steering.interventions import Intervention
        from mistudio.core.steering.session import SteeringSpec

        item = self.features.currentItem()
        prompt = self.prompt.toPlainText()
        if item is None or self.result is None or not prompt.strip():
            self.note.setText("Train first, pick a feature, and type a prompt.")
            return
        sae = self.result.sae.name
        spec = SteeringSpec((sae,), (Intervention(int(item.data(Qt.ItemDataRole.UserRole)),
                                                  self.strength.value() / 10),),
                            units="max", generation=GenerationConfig(max_tokens=24))
        self.note.setText("Writing both continuations, word by word...")
        self.plain_text.clear()
        self.steered_text.clear()
        self.steer_runner.start("steer", spec, prompt, self.device, title="Lesson steering")

    def _streamed(self, items: list[dict[str, Any]]) -> None:
        """Each new piece of text as it is generated, on its side."""
        from PySide6.QtGui import QTextCursor

        for it in items:
            if not isinstance(it, dict) or "side" not in it:
                continue
            box = self.plain_text if it["side"] == "plain" else self.steered_text
            box.moveCursor(QTextCursor.MoveOperation.End)
            box.insertPlainText(it["text"])

    def _generating(self, running: bool) -> None:
        self.generate_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _status(self, text: str) -> None:
        words = student_words(text)
        if words is not None:
            self.status.setText(words)

    def _restyle(self) -> None:
        from PySide6.QtWidgets import QApplication

        self.setStyleSheet(lesson_style(QApplication.font().pointSizeF()))

    def event(self, e: Any) -> bool:
        from PySide6.QtCore import QEvent

        if e.type() == QEvent.Type.ApplicationFontChange:  # presentation mode on or off
            self._restyle()
        return super().event(e)

    def _generated(self, result: Any) -> None:
        from mistudio.core.steering.scorers import REPETITIVE, repetition

        r, plain, steered = result
        self.plain_text.setPlainText("".join(plain))
        self.steered_text.setPlainText("".join(steered))
        broken = repetition("".join(steered)) > REPETITIVE or \
            r.perplexity_steered > 2 * r.perplexity_plain
        self.note.setText(f"Perplexity under the unsteered model: {r.perplexity_plain:.1f} "
                          f"unsteered, {r.perplexity_steered:.1f} steered (lower reads more "
                          "naturally)." + (" Past fluent: the steered side repeats itself or "
                                           "is far less likely. Move the slider left."
                                           if broken else ""))
        self.steered.emit("".join(plain), "".join(steered))

    def closeEvent(self, e: Any) -> None:
        """Closing the lesson stops its jobs (the window's job center waits for them)."""
        for runner in (self.runner, self.steer_runner):
            runner.cancel()
        if self._own_jobs is not None:
            self._own_jobs.shutdown()
        super().closeEvent(e)
