"""The quick start's result, typed: what each stage made, as the CLI prints it (also as JSON)
and the app shows it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mistudio.core.store.manifests import (
    ActivationsSummary,
    DatasetSummary,
    MassiveReport,
    SAESummary,
    TokenizedSummary,
)
from mistudio.core.store.records import Record


@dataclass
class ModelStep(Record):
    name: str = ""
    family: str = ""
    n_layers: int = 0
    d_model: int = 0
    n_params: int = 0


@dataclass
class DatasetStep(DatasetSummary):
    name: str = ""


@dataclass
class TokenizedStep(TokenizedSummary):
    name: str = ""


@dataclass
class ActivationsStep(ActivationsSummary):
    name: str = ""
    layer: int = 0
    hook: str = ""
    reused: bool = False
    """The set of an earlier run with the same settings was used as it is."""
    massive: MassiveReport = field(default_factory=MassiveReport)


@dataclass
class SAEStep(SAESummary):
    name: str = ""
    reused: bool = False


@dataclass
class BestFeature(Record):
    feature: int = 0
    label: str = ""
    score: float = 0.0
    """Held-out detection balanced accuracy."""
    frequency: float = 0.0
    """Share of analysed tokens it fires on."""
    family: str = ""
    fuzzing: float | None = None


@dataclass
class FeaturesStep(Record):
    name: str = ""
    reused: bool = False
    n_tokens: int = 0
    alive: int = 0
    dead: int = 0
    labelled: int = 0
    """Features whose label has a score."""
    score_ge_0_7: int = 0
    concept_ge_0_7: int = 0
    """Of those reaching 0.7, labels that name a concept (not a list of tokens)."""
    mean_score: float | None = None
    best: list[BestFeature] = field(default_factory=list)
    """The best label of each family, concept families first."""
    label_s: float = 0.0
    """Seconds the labelling took (annotating the text included)."""


@dataclass
class SweepRow(Record):
    """One feature at one coefficient in the steering sweep."""

    feature: int = 0
    label: str = ""
    coefficient_x_max: float = 1.0
    """The coefficient, in multiples of the feature's largest activation in its analysis."""
    concept_change: float = 0.0
    """Change of the feature's own mean activation in the generated text (steered - plain)."""
    concept_plain: float = 0.0
    concept_steered: float = 0.0
    perplexity_ratio: float = 1.0
    """Perplexity of the steered text over the unsteered one's (under the unsteered model)."""

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SweepRow:
        data = dict(data or {})
        if "strength" in data and "coefficient_x_max" not in data:  # files written before 0.2
            data["coefficient_x_max"] = data.pop("strength")
        return super().from_json(data)


@dataclass
class SteeringDemo(SweepRow):
    """The steering demonstration the sweep picked: both sides generated."""

    prompt: str = ""
    plain: str = ""
    steered: str = ""
    kl_mean: float = 0.0
    diverges_at: int | None = None
    perplexity_plain: float = float("nan")
    perplexity_steered: float = float("nan")
    repetition: float = 0.0
    sweep: list[SweepRow] = field(default_factory=list)
    reused: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SteeringDemo:
        data = {k: v for k, v in (data or {}).items() if k != "coefficient"}  # "2 x max"
        return super().from_json(data)  # type: ignore[return-value]


@dataclass
class QuickstartResult(Record):
    workspace: str = ""
    model: ModelStep = field(default_factory=ModelStep)
    dataset: DatasetStep = field(default_factory=DatasetStep)
    tokenized: TokenizedStep = field(default_factory=TokenizedStep)
    activations: ActivationsStep = field(default_factory=ActivationsStep)
    sae: SAEStep = field(default_factory=SAEStep)
    features: FeaturesStep = field(default_factory=FeaturesStep)
    steering: SteeringDemo | None = None
    """None when no labelled feature fires on words (nothing worth steering with)."""
    seconds: float = 0.0


def step_of(cls: type[Record], summary: Record, **fields: Any) -> Any:
    """A stage's record from an artifact's summary plus the stage's own fields."""
    return cls.from_json({**summary.to_json(), **fields})
