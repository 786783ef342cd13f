"""What each feature means to the model: logit lens, nearest features, co-occurring features.

All three are computed in blocks of features, so nothing of size d_sae x d_sae or d_sae x vocab
is ever held: per feature only the top few survive, stored as fixed-width columns of the table.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mistudio.core.models.adapters import get_submodule
from mistudio.core.runtime.tasks import TaskState, check_cancelled
from mistudio.core.store.workspace import Workspace


def interpret(ws: Workspace, model: str, sae: Any, hook: str, folder: Path, cfg: Any,
              task: TaskState) -> dict[str, np.ndarray]:
    """Columns for the feature table: logit lens, decoder neighbours, co-occurrence."""
    from mistudio.core.models.registry import load_model

    loaded = load_model(ws, model, device="cpu", dtype="float32")
    W_dec_FO = sae.W_dec_FO.detach().float().cpu()
    task.set_status("Logit lens")
    cols = logit_lens(loaded, W_dec_FO, cfg.logit_lens_k, task)
    task.set_progress(0.5)
    check_cancelled(task)
    task.set_status("Nearest features")
    ids, sims = decoder_neighbours(W_dec_FO, cfg.neighbours_k)
    cols.update(neighbour_ids=ids, neighbour_cos=sims)
    task.set_progress(0.7)
    check_cancelled(task)
    task.set_status("Co-occurring features")
    ids, sims = cooccurrence(folder, W_dec_FO.shape[0], cfg.neighbours_k)
    cols.update(cooccur_ids=ids, cooccur_score=sims)
    task.set_status("Token texts")
    from mistudio.core.features.examples import write_token_texts

    write_token_texts(folder, loaded.tokenizer, np.concatenate(
        [cols["logit_pos_ids"].ravel(), cols["logit_neg_ids"].ravel()]))
    task.set_progress(1.0)
    return cols


@torch.no_grad()
def lens_directions(loaded: Any, dirs_FD: torch.Tensor) -> torch.Tensor:
    """Decoder directions as the unembedding sees them: through the final norm.

    ``norm(d) - norm(0)`` applies the norm's gain (and centring, for LayerNorm) while dropping
    its bias, which shifts every feature's logits alike; the norm's rescaling does not change
    which tokens rank highest.
    """
    adapter = loaded.adapter
    try:
        norm = get_submodule(loaded.model, adapter.final_norm_path)
    except AttributeError:
        return dirs_FD
    dtype = next(norm.parameters()).dtype if any(True for _ in norm.parameters()) else dirs_FD.dtype
    x = dirs_FD.to(dtype)
    return (norm(x) - norm(torch.zeros_like(x[:1]))).float()


@torch.no_grad()
def logit_lens(loaded: Any, W_dec_FO: torch.Tensor, k: int, task: TaskState | None = None,
               block: int = 256) -> dict[str, np.ndarray]:
    """Top ``k`` promoted and suppressed tokens of every feature's decoder direction."""
    W_U_VD = loaded.model.get_output_embeddings().weight.detach().float()
    F = W_dec_FO.shape[0]
    pos_ids = np.zeros((F, k), np.int32)
    pos_vals = np.zeros((F, k), np.float32)
    neg_ids = np.zeros((F, k), np.int32)
    neg_vals = np.zeros((F, k), np.float32)
    for start in range(0, F, block):
        stop = min(start + block, F)
        logits_BV = lens_directions(loaded, W_dec_FO[start:stop]) @ W_U_VD.T
        top = logits_BV.topk(k, dim=-1)
        bottom = (-logits_BV).topk(k, dim=-1)
        pos_ids[start:stop], pos_vals[start:stop] = top.indices.numpy(), top.values.numpy()
        neg_ids[start:stop], neg_vals[start:stop] = bottom.indices.numpy(), -bottom.values.numpy()
        if task is not None:
            check_cancelled(task)
            task.set_progress(0.5 * stop / F)
    return {"logit_pos_ids": pos_ids, "logit_pos_values": pos_vals,
            "logit_neg_ids": neg_ids, "logit_neg_values": neg_vals}


@torch.no_grad()
def decoder_neighbours(W_dec_FO: torch.Tensor, k: int,
                       block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` features whose decoder directions are closest by cosine, per feature."""
    F = W_dec_FO.shape[0]
    k = min(k, F - 1)
    unit_FO = W_dec_FO / W_dec_FO.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    ids = np.zeros((F, k), np.int32)
    sims = np.zeros((F, k), np.float32)
    for start in range(0, F, block):
        stop = min(start + block, F)
        cos_BF = unit_FO[start:stop] @ unit_FO.T
        cos_BF[torch.arange(stop - start), torch.arange(start, stop)] = -2.0  # not itself
        top = cos_BF.topk(k, dim=-1)
        ids[start:stop], sims[start:stop] = top.indices.numpy(), top.values.numpy()
    return ids, sims


def cooccurrence(folder: Path, d_sae: int, k: int, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features that fire on the same tokens: cosine of the binary firing patterns,
    n(f and g) / sqrt(n(f) n(g)), from the sparse store in blocks of features."""
    col_ptr = np.load(folder / "csc_indptr.npy")
    col_rows = np.load(folder / "csc_rows.npy")
    row_ptr = np.load(folder / "csr_indptr.npy")
    row_feats = np.load(folder / "csr_features.npy")
    k = min(k, d_sae - 1)
    ids = np.full((d_sae, k), -1, np.int32)
    scores = np.zeros((d_sae, k), np.float32)
    n_tokens = len(row_ptr) - 1
    counts = torch.from_numpy(np.diff(col_ptr).astype(np.float32))
    with warnings.catch_warnings():  # torch marks sparse CSR as beta at every construction
        warnings.simplefilter("ignore", UserWarning)
        A_TF = torch.sparse_csr_tensor(torch.from_numpy(row_ptr), torch.from_numpy(
            row_feats.astype(np.int64)), torch.ones(len(row_feats)), (n_tokens, d_sae))
        for start in range(0, d_sae, block):
            stop = min(start + block, d_sae)
            lo, hi = int(col_ptr[start]), int(col_ptr[stop])
            ptr = torch.from_numpy(col_ptr[start:stop + 1] - lo)
            At_BT = torch.sparse_csr_tensor(ptr, torch.from_numpy(col_rows[lo:hi].astype(np.int64)),
                                            torch.ones(hi - lo), (stop - start, n_tokens))
            both_BF = (At_BT @ A_TF).to_dense()  # co-firing counts
            denom = torch.sqrt(counts[start:stop, None] * counts[None, :]).clamp_min(1.0)
            score_BF = both_BF / denom
            score_BF[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
            top = score_BF.topk(k, dim=-1)
            ids[start:stop] = np.where(top.values.numpy() > 0, top.indices.numpy(), -1)
            scores[start:stop] = top.values.numpy()
    return ids, scores


def feature_correlation(folder: Path, features: list[int] | np.ndarray) -> np.ndarray:
    """Pearson correlation of the chosen features' activations over every analysed token
    ([n, n]; 0 where a feature never fires). Meant for the few dozen features a person picks:
    it builds a dense [tokens, n] matrix."""
    col_ptr = np.load(folder / "csc_indptr.npy", mmap_mode="r")
    col_rows = np.load(folder / "csc_rows.npy", mmap_mode="r")
    col_vals = np.load(folder / "csc_values.npy", mmap_mode="r")
    n_tokens = len(np.load(folder / "csr_indptr.npy", mmap_mode="r")) - 1
    feats = [int(f) for f in features]
    if len(feats) > 512:
        raise ValueError("feature_correlation is for a few hundred features at most")
    X_TN = np.zeros((n_tokens, len(feats)), np.float32)
    for j, f in enumerate(feats):
        lo, hi = int(col_ptr[f]), int(col_ptr[f + 1])
        X_TN[np.asarray(col_rows[lo:hi]), j] = col_vals[lo:hi]
    X_TN -= X_TN.mean(axis=0)
    norms = np.linalg.norm(X_TN, axis=0)
    live = norms > 0
    C = np.zeros((len(feats), len(feats)), np.float32)
    Xl = X_TN[:, live] / norms[live]
    C[np.ix_(live, live)] = Xl.T @ Xl
    np.fill_diagonal(C, 1.0)
    return C
