"""Named steering presets (JSON in ``WORKSPACE/presets``), their export/import, and A/B ratings.

A preset holds a :class:`SteeringSpec` (model, SAEs, features, coefficients, method, units,
sampling settings). Ratings ("which side better matches the intent?") are appended to the
preset's file together with the prompt and both outputs, so the judgement and what was judged
stay together.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.steering.session import SteeringSpec
from mistudio.core.store.files import atomic_write, read_json, write_json_atomic
from mistudio.core.store.layout import validate_name
from mistudio.core.store.workspace import Workspace

PRESET_DIR = "presets"


def _path(ws: Workspace, name: str) -> Path:
    folder = ws.root / PRESET_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{validate_name(name, 'Preset name')}.json"


def save_preset(ws: Workspace, name: str, spec: SteeringSpec, note: str = "",
                overwrite: bool = False) -> dict[str, Any]:
    path = _path(ws, name)
    old: dict[str, Any] = {}
    if path.exists():
        if not overwrite:
            raise InvalidInputError(f"A preset named {name!r} exists.",
                                    "Choose another name, or allow «overwrite».")
        old = load_preset_data(ws, name)
    data = {"name": name, "spec": spec.to_dict(), "note": note,
            "created": old.get("created", time.time()), "updated": time.time(),
            "ratings": old.get("ratings", []), "evaluations": old.get("evaluations", [])}
    write_json_atomic(path, data)
    return data


def add_evaluation(ws: Workspace, name: str, result: dict[str, Any]) -> int:
    """Keep a steering evaluation (:mod:`mistudio.core.steering.evaluate`) with the preset it
    evaluated; returns how many the preset holds."""
    data = load_preset_data(ws, name)
    data.setdefault("evaluations", []).append({**result, "created": time.time()})
    write_json_atomic(_path(ws, name), data)
    return len(data["evaluations"])


def load_preset_data(ws: Workspace, name: str) -> dict[str, Any]:
    path = _path(ws, name)
    if not path.exists():
        raise NotFoundError(f"No steering preset named {name!r}.",
                            "«do:list_presets».")
    return read_json(path, f"preset {name!r}", "Save it again, or delete it.")


def load_preset(ws: Workspace, name: str) -> SteeringSpec:
    return SteeringSpec.from_dict(load_preset_data(ws, name)["spec"])


def list_presets(ws: Workspace) -> list[dict[str, Any]]:
    folder = ws.root / PRESET_DIR
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            out.append({"name": d["name"], "saes": d["spec"]["saes"],
                        "features": len(d["spec"]["interventions"]),
                        "ratings": len(d.get("ratings", [])),
                        "evaluations": len(d.get("evaluations", [])), "note": d.get("note", "")})
        except (OSError, ValueError, KeyError):
            out.append({"name": p.stem, "error": "unreadable"})
    return out


def delete_preset(ws: Workspace, name: str) -> None:
    path = _path(ws, name)
    if not path.exists():
        raise NotFoundError(f"No steering preset named {name!r}.", "«do:list_presets».")
    path.unlink()


def export_preset(ws: Workspace, name: str, out: Path) -> Path:
    src = _path(ws, name)
    if not src.exists():
        raise NotFoundError(f"No steering preset named {name!r}.", "«do:list_presets».")
    out = out.expanduser()
    if out.is_dir():
        out = out / src.name
    with atomic_write(out) as fh, open(src, "rb") as source:
        shutil.copyfileobj(source, fh)
    return out


def import_preset(ws: Workspace, file: Path, name: str | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    data = read_json(file.expanduser(), f"preset file {file}", "Check the file.")
    spec = SteeringSpec.from_dict(data.get("spec", {}))  # validates
    saved = save_preset(ws, name or data.get("name") or file.stem, spec, data.get("note", ""),
                        overwrite)
    if data.get("ratings"):
        saved["ratings"] = data["ratings"]
        write_json_atomic(_path(ws, saved["name"]), saved)
    return saved


def rate(ws: Workspace, name: str, result: dict[str, Any],
         better: Literal["plain", "steered", "tie"], comment: str = "") -> int:
    """Store which side better matched the intent, with the prompt and both outputs."""
    if better not in ("plain", "steered", "tie"):
        raise InvalidInputError(f"Unknown rating {better!r}.", "Use plain, steered or tie.")
    data = load_preset_data(ws, name)
    data.setdefault("ratings", []).append({
        "better": better, "comment": comment, "time": time.time(), "prompt": result["prompt"],
        "plain": result["plain"]["text"], "steered": result["steered"]["text"],
        "spec": result.get("spec", data["spec"])})
    write_json_atomic(_path(ws, name), data)
    return len(data["ratings"])
