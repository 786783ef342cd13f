"""What each kind of artifact's ``manifest.json`` holds, as typed records.

An artifact's manifest is the source of truth (the catalog indexes it): its ``config`` (how it
was made: the producer's own configuration, as JSON), its ``provenance`` (what it was made
from) and its ``summary`` (the figures lists and dialogs show), plus sections of its own kind.
The same ``provenance`` and ``summary`` classes type the catalog's rows, so the CLI and the app
read ``art.summary.tokens`` whichever they got it from. Manifests written by earlier versions
load: fields they lack take their defaults, keys this version does not know are kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mistudio.core.store.records import Record

# -- shared parts ---------------------------------------------------------------------------------


@dataclass
class Provenance(Record):
    """What an artifact was made from, and by which version."""

    mistudio: str | None = None
    """miStudio version that made it."""
    created: float | None = None
    """When it was made (seconds since the epoch)."""


def made_now() -> dict[str, Any]:
    """The provenance fields every new artifact gets: this version, and now."""
    import time

    from mistudio import __version__

    return {"mistudio": __version__, "created": time.time()}


@dataclass
class Histogram(Record):
    counts: list[float] = field(default_factory=list)
    edges: list[float] = field(default_factory=list)


# -- datasets -------------------------------------------------------------------------------------


@dataclass
class DatasetSummary(Record):
    documents: int = 0
    characters: int = 0


@dataclass
class DatasetProvenance(Provenance):
    description: str = ""
    """Where the text came from, in words."""
    columns: dict[str, str] = field(default_factory=dict)
    """The source's columns and their types ('string' for text)."""


# -- tokenized sets -------------------------------------------------------------------------------


@dataclass
class TokenizedSummary(Record):
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    """Tokens of text (padding not counted)."""
    dropped_tail_tokens: int = 0


@dataclass
class TokenizedProvenance(Provenance):
    dataset: str = ""
    model: str = ""
    bos_token_id: int | None = None
    """BOS put first in every sequence (None: not prepended)."""
    prepend_bos: bool = False
    bos_token: str | None = None
    separator_token_id: int | None = None
    pad_token_id: int | None = None


@dataclass
class TopToken(Record):
    id: int = 0
    token: str = ""
    count: int = 0


@dataclass
class TokenStats(Record):
    doc_length_histogram: Histogram = field(default_factory=Histogram)
    doc_length_mean: float = 0.0
    doc_length_max: int = 0
    top_tokens: list[TopToken] = field(default_factory=list)


# -- models ---------------------------------------------------------------------------------------

HOOK_POINTS = ("resid_pre", "resid_post", "mlp_in", "mlp_out", "attn_out", "attn_z")
"""Hook points every supported family has (see mistudio.core.models.adapters)."""


@dataclass
class ModelSummary(Record):
    """What the app shows about a model; measured from its configuration at registration."""

    family: str = ""
    model_type: str = ""
    n_layers: int = 0
    d_model: int = 0
    d_mlp: int = 0
    vocab_size: int = 0
    n_params: int = 0
    max_context: int = 0
    hook_points: tuple[str, ...] = HOOK_POINTS
    d_attn: int = 0
    """Width of attn_z (heads x head dimension); 0 = d_model (models registered before it)."""

    def width(self, hook: str) -> int:
        """Width of a hook point's activations."""
        return (self.d_attn or self.d_model) if hook == "attn_z" else self.d_model


@dataclass
class ModelProvenance(Provenance):
    type: str = ""
    """embedded, bundled (another built-in model), gguf, folder or hub."""
    path: str | None = None
    gguf_file: str | None = None
    repo_id: str | None = None


# -- activation sets ------------------------------------------------------------------------------


@dataclass
class ActivationsSummary(Record):
    tokens: int = 0
    """Rows stored (tokens so far, for a partial set)."""
    massive_tokens: int = 0
    hook_points: list[str] = field(default_factory=list)
    d_model: int = 0
    chunks: int = 0
    bytes: int = 0
    tokens_per_s: float | None = None
    """Tokens through the model per second, in the run that made it."""


@dataclass
class ActivationsProvenance(Provenance):
    model: str = ""
    tokenized: str = ""
    quantization: str = "none"
    """How the model's weights were held (none, int8, int4, nf4, bnb8)."""
    torch: str | None = None
    prepend_bos: bool | None = None


@dataclass
class Chunk(Record):
    rows: int = 0
    seq_end: int = 0
    """Sequences of the tokenized set read once this chunk is complete (where a resume goes on)."""


@dataclass
class MassiveExample(Record):
    row: int = 0
    sequence: int = 0
    position: int = 0
    norm: float = 0.0
    """The row's norm at the hook point that flagged it (``hook``)."""
    hook: str | None = None


@dataclass
class HookMassive(Record):
    """One hook point's flags: training, evaluation and analysis at this hook point leave out
    only the rows flagged here."""

    median_norm: float = 0.0
    threshold: float = 0.0
    count: int = 0
    max_norm: float = 0.0
    positions: dict[str, int] = field(default_factory=dict)
    """Position in the sequence -> how many rows flagged here sit there."""
    examples: list[MassiveExample] = field(default_factory=list)


@dataclass
class MassiveReport(Record):
    """Rows flagged as massive (attention sinks; see mistudio.core.activations.massive): the
    counts, positions and examples here are over rows flagged at any hook point; ``by_hook``
    holds each hook point's own."""

    factor: float = 10.0
    count: int = 0
    fraction: float = 0.0
    by_hook: dict[str, HookMassive] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    """Position in the sequence -> how many flagged rows sit there."""
    examples: list[MassiveExample] = field(default_factory=list)


@dataclass
class NormStats(Record):
    """Norm statistics of one hook point's kept rows, for normalisation during training."""

    count: int = 0
    mean_norm: float = 0.0
    std_norm: float = 0.0
    scale_to_sqrt_d: float = 1.0
    """Multiply activations by this to make their mean norm sqrt(d_model) (SAELens's rule)."""
    mean_norm_all_rows: float = 0.0


# -- sparse autoencoders --------------------------------------------------------------------------


@dataclass
class SAESummary(Record):
    """A trained (or imported) SAE's figures: shape, held-out metrics, in-model metrics."""

    architecture: str = ""
    d_in: int = 0
    d_sae: int = 0
    hook: str = ""
    target_hook: str | None = None
    steps: int = 0
    """Optimiser steps done (so far, for a run in progress)."""
    tokens: int = 0
    """Training tokens seen."""
    train_rows: int = 0
    """Training tokens there were to draw from (the set minus its held-out tail and massive
    tokens; 0: not recorded)."""
    passes: float | None = None
    """Tokens seen / training tokens: how many times training read each token on average."""
    world_size: int = 1
    rank_checksums: list[float] = field(default_factory=list)
    optimizer: str | None = None
    lr: float | None = None
    sparsity_coefficient: float | None = None
    keep_massive: bool = False
    # held out (the last rows of the activation set)
    mse: float | None = None
    explained_variance: float | None = None
    explained_variance_all_tokens: float | None = None
    """The same over every held-out token, massive ones included (comparison only)."""
    mse_all_tokens: float | None = None
    massive_excluded: int = 0
    l0: float | None = None
    dead_fraction: float | None = None
    """Latents that fired on none of the held-out tokens."""
    dense_fraction: float | None = None
    eval_tokens: int = 0
    """Held-out tokens the figures above are over."""
    # inside the model (mistudio.core.sae.evaluation)
    ce_loss_clean: float | None = None
    ce_loss_sae: float | None = None
    ce_loss_zero: float | None = None
    ce_loss_score: float | None = None
    kl_div: float | None = None
    in_model_tokens: int = 0
    in_model_sequences: int = 0
    massive_passed_through: int = 0
    in_model_error: str | None = None
    """Why it could not be evaluated inside the model (e.g. its tokenized set is gone)."""
    imported_format: str | None = None
    """saelens, sparsify, gemmascope, llamascope or dictionary_learning (imported SAEs)."""


@dataclass
class SAEProvenance(Provenance):
    activations: str | None = None
    model: str | None = None
    model_quantization: str = "none"
    """The weights the activations came from: an SAE of an int4 model is steered on int4."""


# -- feature analyses -----------------------------------------------------------------------------


@dataclass
class FeaturesSummary(Record):
    n_tokens: int = 0
    """Tokens analysed (massive ones left out)."""
    massive_excluded: int = 0
    n_rows: int = 0
    n_sequences: int = 0
    d_sae: int = 0
    n_entries: int = 0
    top_k: int = 0
    alive: int = 0
    dead: int = 0
    dense: int = 0
    wall_s: float = 0.0
    tokens_per_s: float = 0.0


@dataclass
class FeaturesProvenance(Provenance):
    sae: str = ""
    activations: str = ""
    model: str = ""
    hook: str = ""
    tokenized: str = ""
    sae_checksum: str | None = None
    """sha256 of the SAE weights analysed (labels carry over only to the same weights)."""


# -- manifests ------------------------------------------------------------------------------------


@dataclass
class Manifest(Record):
    """The common part of every manifest; one subclass per kind."""

    kind: ClassVar[str] = ""
    name: str = ""
    status: str = "complete"
    """complete, or partial (a build that can be resumed)."""
    config: dict[str, Any] = field(default_factory=dict)
    """How it was made: the producer's configuration, as JSON."""
    provenance: Provenance = field(default_factory=Provenance)
    summary: Record = field(default_factory=Record)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Any:
        data = {k: v for k, v in (data or {}).items() if k != "kind"}
        return super().from_json(data)


@dataclass
class DatasetManifest(Manifest):
    kind: ClassVar[str] = "dataset"
    provenance: DatasetProvenance = field(default_factory=DatasetProvenance)
    summary: DatasetSummary = field(default_factory=DatasetSummary)


@dataclass
class TokenizedManifest(Manifest):
    kind: ClassVar[str] = "tokenized"
    provenance: TokenizedProvenance = field(default_factory=TokenizedProvenance)
    summary: TokenizedSummary = field(default_factory=TokenizedSummary)
    stats: TokenStats = field(default_factory=TokenStats)


@dataclass
class ModelManifest(Manifest):
    kind: ClassVar[str] = "model"
    provenance: ModelProvenance = field(default_factory=ModelProvenance)
    summary: ModelSummary = field(default_factory=ModelSummary)


@dataclass
class ActivationsManifest(Manifest):
    kind: ClassVar[str] = "activations"
    provenance: ActivationsProvenance = field(default_factory=ActivationsProvenance)
    summary: ActivationsSummary = field(default_factory=ActivationsSummary)
    hook_points: list[str] = field(default_factory=list)
    d_model: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    massive: MassiveReport | None = None
    """None: made before massive tokens were flagged (flagged when it is first opened)."""
    stats: dict[str, NormStats] = field(default_factory=dict)
    storage: dict[str, str] = field(default_factory=dict)
    """Hook points stored wider than the set's dtype from some chunk on (values float16 cannot
    hold safely), with the type and why: never an overflow written as inf."""


@dataclass
class SAEManifest(Manifest):
    kind: ClassVar[str] = "sae"
    provenance: SAEProvenance = field(default_factory=SAEProvenance)
    summary: SAESummary = field(default_factory=SAESummary)
    density_histogram: Histogram | None = None
    """log10 per-token firing density of every latent on the held-out tokens."""


@dataclass
class FeaturesManifest(Manifest):
    kind: ClassVar[str] = "features"
    provenance: FeaturesProvenance = field(default_factory=FeaturesProvenance)
    summary: FeaturesSummary = field(default_factory=FeaturesSummary)
    previous_labels: dict[str, Any] = field(default_factory=dict)
    """What became of the labels of the analysis this one replaced (mistudio.core.features.carry)."""


MANIFESTS: dict[str, type[Manifest]] = {m.kind: m for m in (
    DatasetManifest, TokenizedManifest, ModelManifest, ActivationsManifest, SAEManifest,
    FeaturesManifest)}
"""Kind -> its manifest class."""


def manifest_of(data: dict[str, Any]) -> Manifest:
    """The typed manifest of a parsed ``manifest.json`` (its ``kind`` picks the class)."""
    cls = MANIFESTS.get(str(data.get("kind")), Manifest)
    return cls.from_json(data)


def provenance_type(kind: str) -> type[Provenance]:
    return _field_type(kind, "provenance")


def summary_type(kind: str) -> type[Record]:
    return _field_type(kind, "summary")


def _field_type(kind: str, name: str) -> Any:
    cls = MANIFESTS.get(kind, Manifest)
    return next(f for f in dataclasses.fields(cls) if f.name == name).default_factory


def manifest_path(folder: Path) -> Path:
    return folder / "manifest.json"
