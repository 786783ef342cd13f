"""Which hook point and model an SAE made elsewhere reads, from what its files already say.

Each ecosystem names hook points its own way; all of them map onto miStudio's
``layers.L.HOOK`` (:mod:`mistudio.core.models.adapters`):

- TransformerLens / SAELens (``cfg.json``: ``metadata.hook_name``, or ``hook_name`` /
  ``hook_point`` in older files): ``blocks.L.hook_resid_pre``, ``hook_resid_post``,
  ``hook_mlp_out``, ``hook_attn_out``, ``ln2.hook_normalized`` (what the MLP reads),
  ``attn.hook_z`` (heads before the output projection);
- Llama Scope (``hyperparams.json``: ``hook_point_in`` / ``hook_point_out``), in the same names;
- sparsify: the folder is named after the module, ``layers.L`` (the block's output),
  ``layers.L.mlp``, ``layers.L.self_attn`` (with or without ``model.`` / ``gpt_neox.`` /
  ``transformer.h`` prefixes);
- Gemma Scope: ``layer_L/width_W/average_l0_N`` inside a ``gemma-scope-...-res|mlp|att``
  repository (or a folder named so).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from mistudio.core.models.adapters import to_hook_key

_SCOPE = {"res": "resid_post", "mlp": "mlp_out", "att": "attn_z"}
_MODEL_ALIASES = {"gpt2-small": "gpt2", "gpt2": "gpt2"}


class FoundHook(NamedTuple):
    """What an SAE's files say about where it reads."""

    hook: str | None
    """miStudio hook key (layers.L.HOOK), or None when the files do not say."""
    target: str | None
    """The hook point it reconstructs when that is another one (a transcoder)."""
    model: str | None
    """Model name or id found in the files (e.g. gemma-2-2b, EleutherAI/pythia-70m-deduped)."""
    said: str | None
    """The name as the files wrote it, for messages."""


def read_hook(folder: Path, fmt: str, cfg: dict[str, Any] | None = None) -> FoundHook:
    """The hook point, target and model an SAE folder's own files name."""
    folder = Path(folder)
    if fmt == "saelens" and cfg is not None:
        meta = cfg.get("metadata") or {}
        said = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
        out = meta.get("hook_name_out") or cfg.get("hook_name_out") or cfg.get("hook_point_out")
        model = meta.get("model_name") or cfg.get("model_name")
        return FoundHook(to_hook_key(said) if said else None,
                         to_hook_key(out) if out and out != said else None, model, said)
    if fmt == "llamascope" and cfg is not None:
        said, out = cfg.get("hook_point_in"), cfg.get("hook_point_out")
        return FoundHook(to_hook_key(said) if said else None,
                         to_hook_key(out) if out and out != said else None,
                         cfg.get("model_name"), said)
    if fmt == "sparsify":
        return FoundHook(to_hook_key(folder.name), None, (cfg or {}).get("model"), folder.name)
    if fmt == "gemmascope":
        layer = next((re.fullmatch(r"layer_(\d+)", p).group(1) for p in folder.parts  # type: ignore[union-attr]
                      if re.fullmatch(r"layer_(\d+)", p)), None)
        kind = next((m for p in reversed(folder.parts)
                     if (m := re.search(r"gemma-scope-([\w.-]+?)-(?:pt|it)-(res|mlp|att)", p))),
                    None)
        if layer is None or kind is None:
            return FoundHook(None, None, None, None)
        model = f"gemma-2-{kind.group(1)}"
        return FoundHook(f"layers.{int(layer)}.{_SCOPE[kind.group(2)]}", None, model,
                         "/".join(folder.parts[-3:]))
    return FoundHook(None, None, None, None)


def read_json_if(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_key(name: str) -> str:
    """A model id reduced for comparison: gpt2-small ~ openai-community/gpt2 ~ gpt2."""
    last = name.strip().rstrip("/").split("/")[-1].lower()
    last = re.sub(r"\.gguf$", "", last)
    return _MODEL_ALIASES.get(last, last)


def match_model(ws: Any, model_id: str | None) -> str | None:
    """The workspace model that ``model_id`` (from an SAE's files or a release) names: by its
    registered name, its Hugging Face id or its folder's name. None when there is none."""
    if not model_id:
        return None
    want = model_key(model_id)
    for art in ws.catalog.list("model"):
        source = str(art.config.get("source") or "")
        keys = {model_key(art.name), model_key(source.removeprefix("hf:"))}
        if want in keys:
            return art.name
    return None
