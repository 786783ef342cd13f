"""Running a trained SAE over an evaluation set and storing what the feature browser reads.

One streaming pass over an activation set, in blocks of whole sequences, never holding
[n_tokens, d_sae] dense: each block is encoded, its non-zero latents appended to a token-major
sparse store (CSR: which features fire on which token), per-feature counts, sums and maxima
accumulated, and a streaming top-k of per-sequence maxima kept in O(d_sae * k) memory. At the end
the sparse store is transposed (CSC: every token a feature fires on, in order), from which the
histograms are computed and examples are read lazily per feature (:mod:`examples`).

The analysis folder (``features/NAME``)::

    manifest.json        SAE, activation set, tokenized set, model, token count, status
    features.arrow       the numeric table: frequency, log10 density, max, mean, flags, ...
    labels.sqlite        labels with source, scorer and score (FTS5 for search)
    top_values.npy       [F, K] per-sequence maxima, descending; top_sequences.npy [F, K]
    histograms.npy       [F, 32] counts of activations in 32 bins from 0 to the feature's max
    csr_*.npy, csc_*.npy the sparse activations, token-major and feature-major
    rows.npy             [n_tokens, 3] sequence, position and token id of every row
    interp.npz           logit lens, decoder neighbours, co-occurring features
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from mistudio.core.activations.importing import IMPORTED_TEXT
from mistudio.core.activations.store import ActivationSet, open_activations
from mistudio.core.data.tokenization import open_tokenized
from mistudio.core.features.plugin_columns import AnalysisContext, plugin_columns
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import SubTask, TaskState, check_cancelled, silent_task
from mistudio.core.sae.io import open_sae
from mistudio.core.store.layout import MANIFEST
from mistudio.core.store.manifests import (
    FeaturesManifest,
    FeaturesProvenance,
    FeaturesSummary,
    made_now,
)
from mistudio.core.store.workspace import Workspace

HIST_BINS = 32
DENSE_FREQUENCY = 0.1


@dataclass(frozen=True)
class AnalyzeConfig:
    """What to analyse and how much to keep."""

    sae: str
    """The SAE to analyse."""
    activations: str | None = None
    """Activation set to run it over; None = the one it was trained on."""
    tokens: int = 100_000
    """Tokens of the set to use (from its start; the SAE's held-out tail is at the end)."""
    top_contexts: int = 20
    """Max-activating contexts kept per feature (at most 100)."""
    block_rows: int = 2048
    """Rows encoded at a time (whole sequences)."""
    logit_lens_k: int = 10
    """Top positive and negative tokens kept per feature."""
    neighbours_k: int = 10
    """Nearest features by decoder cosine and most co-occurring features kept per feature."""
    device: str = "cpu"
    """Device for encoding."""
    keep_massive: bool = False
    """Analyse massive tokens too (attention sinks flagged at extraction); off, they fire no
    feature and do not count in frequencies (see mistudio.core.activations.massive)."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_contexts <= 100:
            raise InvalidInputError(f"«top_contexts» must be between 1 and 100, got "
                                    f"{self.top_contexts}.",
                                    "Use «top_contexts=20» (the default) or up to 100.")
        if self.tokens <= 0:
            raise InvalidInputError(f"«tokens» must be positive, got {self.tokens}.",
                                    "Use «tokens=100000» (the default).")


def analyze(ws: Workspace, cfg: AnalyzeConfig, name: str | None = None,
            task: TaskState | None = None, overwrite: bool = False) -> FeaturesManifest:
    """Analyse ``cfg.sae`` and store the result as ``features/NAME`` (default: the SAE's name).
    Labels of an analysis it replaces are carried over or archived (:mod:`.carry`). A
    half-written analysis is never resumed: it starts clean (the pass is cheap next to
    training)."""
    from mistudio.core.features.carry import carry_labels, weights_checksum

    task = task or silent_task()
    name = name or cfg.sae
    with ws.build("features", name, "analyze", asdict(cfg), overwrite) as b:
        src = _inputs(ws, cfg)
        checksum = weights_checksum(Path(src.sae_art.path))
        t0 = time.perf_counter()
        summary = _fill(ws, b.folder, src, cfg, task)
        _check_same_weights(ws, cfg.sae, checksum)
        # labels of the analysis this one replaces: carried over (same weights) or archived
        kept = carry_labels(b.final, b.folder, _old_checksum(b.final), checksum,
                            src.sae.cfg.d_sae) if b.final.exists() else {}
        b.manifest = FeaturesManifest(
            name, config=asdict(cfg), summary=summary.replace(
                wall_s=round(time.perf_counter() - t0, 2)),
            provenance=FeaturesProvenance(
                **made_now(), sae=cfg.sae, activations=src.acts_name, model=src.model,
                hook=src.hook, tokenized=src.tokenized.manifest.name, sae_checksum=checksum),
            previous_labels=kept)
    task.set_progress(1.0)
    return b.manifest


class _Inputs(NamedTuple):
    """What an analysis reads: the SAE, its activation set and tokens, the model's name."""

    sae: Any
    sae_art: Any
    hook: str
    acts_name: str
    acts: ActivationSet
    model: str
    tokenized: Any


def _inputs(ws: Workspace, cfg: AnalyzeConfig) -> _Inputs:
    """Open the SAE and the activations it runs over, checking that they belong together."""
    sae, _ = open_sae(ws, cfg.sae, cfg.device)
    sae_art = ws.catalog.get("sae", cfg.sae)
    hook = sae_art.summary.hook
    acts_name = cfg.activations or sae_art.provenance.activations
    if not acts_name:
        raise InvalidInputError(f"SAE {cfg.sae!r} has no activation set on record.",
                                "Choose «activations=NAME» (a set with its hook point).")
    acts = open_activations(ws, acts_name)
    if acts.tokenized == IMPORTED_TEXT:
        raise InvalidInputError(
            f"Activation set {acts_name!r} was imported without the text it was read from, and "
            "an analysis shows each feature's examples in that text.",
            "Analyse over an extracted set of the same hook point («activations=NAME»).")
    model = acts.model
    sae_model = sae_art.provenance.model
    if sae_model and sae_model != model:
        raise InvalidInputError(f"SAE {cfg.sae!r} was trained on {sae_model}, but activation set "
                                f"{acts_name!r} comes from {model}.",
                                f"Use an activation set of {sae_model}.")
    if hook not in acts.keys or acts.d_model != sae.cfg.d_in:
        raise InvalidInputError(f"Activation set {acts_name!r} has no {hook} of width "
                                f"{sae.cfg.d_in} (it has {', '.join(acts.keys)}, width "
                                f"{acts.d_model}).", "Extract that hook point first.")
    return _Inputs(sae, sae_art, hook, acts_name, acts, model, open_tokenized(ws, acts.tokenized))


def _fill(ws: Workspace, folder: Path, src: _Inputs, cfg: AnalyzeConfig,
          task: TaskState) -> FeaturesSummary:
    """Write the analysis's files into ``folder``; returns its summary."""
    from mistudio.core.features.interpret import interpret
    from mistudio.core.features.store import write_table

    sae, acts = src.sae, src.acts
    n_rows = _whole_sequences(acts, min(cfg.tokens, acts.n_rows))
    stream = _stream(sae, acts, src.hook, n_rows, cfg, folder, SubTask(task, 0.0, 0.7))
    task.set_status("Indexing features")
    csc = _transpose(folder, stream["n_entries"], sae.cfg.d_sae)
    n_used = n_rows - stream["excluded"]
    stats = _feature_stats(stream, csc, n_used)
    np.save(folder / "histograms.npy", _histograms(folder, csc, stats["max_activation"]))
    rows = _row_tokens(acts, src.tokenized, n_rows)
    np.save(folder / "rows.npy", rows)
    check_cancelled(task)
    task.set_status("Logit lens, neighbours and co-occurrence")
    extras = interpret(ws, src.model, sae, src.hook, folder, cfg, SubTask(task, 0.75, 0.98))
    task.set_status("Plugins' feature analyses")
    added, owners = plugin_columns(AnalysisContext(
        sae, {**stats, **extras}, csc["indptr"], csc["rows"], csc["values"], rows))
    write_table(folder, {"feature": np.arange(sae.cfg.d_sae, dtype=np.int32), **stats, **extras,
                         **added}, plugin_owners=owners)
    return FeaturesSummary(
        n_tokens=n_used, massive_excluded=stream["excluded"], n_rows=n_rows,
        n_sequences=int(rows[-1, 0] - rows[0, 0] + 1) if n_rows else 0, d_sae=sae.cfg.d_sae,
        n_entries=stream["n_entries"], top_k=cfg.top_contexts,
        alive=int((stats["frequency"] > 0).sum()), dead=int((stats["frequency"] == 0).sum()),
        dense=int(stats["dense"].sum()),
        tokens_per_s=round(n_rows / max(stream["encode_s"], 1e-9)))


def _check_same_weights(ws: Workspace, sae: str, checksum: str | None) -> None:
    """The SAE is still the one analysed: not removed, not trained again meanwhile (an
    analysis must describe the weights it names)."""
    from mistudio.core.features.carry import weights_checksum

    art = ws.catalog.find("sae", sae)
    now = weights_checksum(Path(art.path)) if art is not None else None
    if now is None or now != checksum:
        what = "removed" if now is None else "trained again"
        raise InvalidInputError(f"SAE {sae!r} was {what} while it was being analysed; the "
                                "analysis is discarded (it would describe weights that are "
                                "not there).", f"«do:analyze={sae}» once the SAE is ready.")


def _old_checksum(folder: Path) -> str | None:
    try:
        return FeaturesProvenance.from_json(
            json.loads((folder / MANIFEST).read_text())["provenance"]).sae_checksum
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _whole_sequences(acts: ActivationSet, n: int) -> int:
    """``n`` rounded down to the end of a sequence (unless that leaves nothing)."""
    if n >= acts.n_rows:
        return acts.n_rows
    seq = acts.row_positions(n - 1, n + 1)[:, 0]
    if seq[0] != seq[1]:
        return n
    first = acts.row_positions(0, n)[:, 0]
    cut = int(np.searchsorted(first, first[-1]))
    return cut or n


@torch.no_grad()
def _stream(sae: Any, acts: ActivationSet, hook: str, n_rows: int, cfg: AnalyzeConfig,
            folder: Path, task: TaskState) -> dict[str, Any]:
    """The one pass: sparse store, per-feature sums, streaming top-k of sequence maxima."""
    F, K = sae.cfg.d_sae, cfg.top_contexts
    device = next(sae.parameters()).device
    count_F = torch.zeros(F, dtype=torch.long)
    sum_F = torch.zeros(F, dtype=torch.float64)
    max_F = torch.zeros(F)
    top_vals_FK = torch.full((F, K), -1.0)
    top_seq_FK = torch.full((F, K), -1, dtype=torch.int32)
    row_counts = np.zeros(n_rows, dtype=np.int32)
    feats_out = open(folder / "csr_features.bin", "wb")
    vals_out = open(folder / "csr_values.bin", "wb")
    n_entries, encode_s, start = 0, 0.0, 0
    excluded = acts.excluded_rows(cfg.keep_massive, (hook,))
    excluded = excluded[excluded < n_rows]
    # at least two sequences per block, so that every block can end at a sequence boundary
    block = max(cfg.block_rows, 2 * int(acts.config.get("context_length", 128)))
    try:
        while start < n_rows:
            check_cancelled(task)
            stop = min(start + block, n_rows)
            seq_R = acts.row_positions(start, stop)[:, 0]
            if stop < n_rows:  # end the block at a sequence boundary
                cut = int(np.searchsorted(seq_R, seq_R[-1]))
                if cut > 0:
                    stop, seq_R = start + cut, seq_R[:cut]
            x_RD = torch.from_numpy(acts.rows(hook, start, stop)).to(device)
            finite_R = torch.isfinite(x_RD).all(dim=1)
            if not bool(finite_R.all()):
                bad = (torch.nonzero(~finite_R).flatten()[:5] + start).tolist()
                raise InvalidInputError(
                    f"Activation set {acts.manifest.name!r} has NaN or infinite values at "
                    f"{hook} (rows {', '.join(map(str, bad))}...); nothing was analysed.",
                    "Extract it again (with model dtype float32 if the model ran in float16).")
            t = time.perf_counter()
            latents_RF = sae.encode(x_RD).float().cpu()
            encode_s += time.perf_counter() - t
            if len(excluded):  # massive rows: no feature fires on them
                latents_RF[torch.from_numpy(~acts.kept_mask(start, stop, cfg.keep_massive,
                                                             (hook,)))] = 0.0
            rows_N, feats_N = latents_RF.nonzero(as_tuple=True)  # row-major: CSR order
            vals_N = latents_RF[rows_N, feats_N]
            row_counts[start:stop] = np.bincount(rows_N.numpy(), minlength=stop - start)
            feats_out.write(feats_N.to(torch.int32).numpy().tobytes())
            vals_out.write(vals_N.numpy().astype(np.float32).tobytes())
            n_entries += int(rows_N.numel())
            count_F += torch.bincount(feats_N, minlength=F)
            sum_F.index_add_(0, feats_N, vals_N.double())
            max_F = torch.maximum(max_F, latents_RF.amax(0))
            # per-sequence maxima [S, F], merged into the running top-k of each feature
            uniq, local_R = np.unique(seq_R, return_inverse=True)
            local = torch.from_numpy(local_R.astype(np.int64))[:, None].expand(-1, F)
            seq_max_SF = torch.zeros(len(uniq), F).scatter_reduce_(0, local, latents_RF, "amax")
            cand_vals = torch.cat([top_vals_FK, seq_max_SF.T], dim=1)  # [F, K + S]
            cand_seq = torch.cat([top_seq_FK, torch.from_numpy(uniq.astype(np.int32))
                                  .expand(F, -1)], dim=1)
            top_vals_FK, order = cand_vals.topk(K, dim=1)
            top_seq_FK = cand_seq.gather(1, order)
            start = stop
            task.set_progress(start / n_rows)
    finally:
        feats_out.close()
        vals_out.close()
    top_seq_FK[top_vals_FK <= 0] = -1  # fewer than K firing sequences
    np.save(folder / "top_values.npy", top_vals_FK.clamp_min(0).numpy())
    np.save(folder / "top_sequences.npy", top_seq_FK.numpy())
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    np.save(folder / "csr_indptr.npy", indptr)
    return {"count": count_F.numpy(), "sum": sum_F.numpy(), "max": max_F.numpy(),
            "n_entries": n_entries, "encode_s": encode_s, "excluded": len(excluded)}


def _transpose(folder: Path, n_entries: int, d_sae: int) -> dict[str, np.ndarray]:
    """CSC from the CSR files: per feature, the rows it fires on (ascending) and the values."""
    feats = np.fromfile(folder / "csr_features.bin", dtype=np.int32, count=n_entries)
    vals = np.fromfile(folder / "csr_values.bin", dtype=np.float32, count=n_entries)
    indptr = np.load(folder / "csr_indptr.npy")
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
    order = np.argsort(feats, kind="stable")  # stable: rows stay ascending within a feature
    col_ptr = np.zeros(d_sae + 1, dtype=np.int64)
    np.cumsum(np.bincount(feats, minlength=d_sae), out=col_ptr[1:])
    csc = {"indptr": col_ptr, "rows": rows[order], "values": vals[order]}
    for k, v in csc.items():
        np.save(folder / f"csc_{k}.npy", v)
    np.save(folder / "csr_features.npy", feats)
    np.save(folder / "csr_values.npy", vals)
    (folder / "csr_features.bin").unlink()
    (folder / "csr_values.bin").unlink()
    return csc


def _feature_stats(stream: dict[str, Any], csc: dict[str, np.ndarray],
                   n_rows: int) -> dict[str, np.ndarray]:
    count = stream["count"]
    freq = count / max(n_rows, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, stream["sum"] / np.maximum(count, 1), 0.0)
        log10 = np.where(count > 0, np.log10(np.maximum(freq, 1e-12)), -np.inf)
    return {"frequency": freq.astype(np.float32), "log10_density": log10.astype(np.float32),
            "max_activation": stream["max"].astype(np.float32),
            "mean_activation": mean.astype(np.float32), "count": count.astype(np.int64),
            "dead": count == 0, "dense": freq > DENSE_FREQUENCY}


def _histograms(folder: Path, csc: dict[str, np.ndarray], max_F: np.ndarray) -> np.ndarray:
    """[F, 32] counts of each feature's non-zero activations in 32 bins from 0 to its max."""
    F = len(max_F)
    feat = np.repeat(np.arange(F, dtype=np.int64), np.diff(csc["indptr"]))
    scale = np.where(max_F > 0, HIST_BINS / np.maximum(max_F, 1e-12), 0.0)
    bins = np.minimum((csc["values"] * scale[feat]).astype(np.int64), HIST_BINS - 1)
    return np.bincount(feat * HIST_BINS + bins, minlength=F * HIST_BINS).reshape(F, HIST_BINS) \
        .astype(np.int32)


def _row_tokens(acts: ActivationSet, tokenized: Any, n_rows: int) -> np.ndarray:
    """[n_rows, 3]: sequence, position and token id of every analysed row."""
    pos = acts.row_positions(0, n_rows).astype(np.int64)
    out = np.zeros((n_rows, 3), dtype=np.int32)
    out[:, :2] = pos
    if n_rows:
        first, last = int(pos[:, 0].min()), int(pos[:, 0].max())
        ids, _ = tokenized.slice(first, last + 1)
        out[:, 2] = ids[pos[:, 0] - first, pos[:, 1]]
    return out
