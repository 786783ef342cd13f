"""A steering experiment as data: which SAEs, features, coefficients and method, on which model.

:func:`run_steering` loads what a :class:`SteeringSpec` names, checks that it fits together, and
runs the side-by-side generation. :class:`Steerer` keeps the model and SAEs loaded so a UI can
change coefficients and generate again without reloading.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mistudio.core.activations.massive import sae_threshold
from mistudio.core.models.registry import LoadedModel, load_model
from mistudio.core.runtime.errors import InvalidInputError
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.sae.io import open_sae
from mistudio.core.steering.generate import Comparison, GenerationConfig, compare
from mistudio.core.steering.interventions import Intervention, SiteSteer
from mistudio.core.store.workspace import Workspace


@dataclass(frozen=True)
class SteeringSpec:
    """Everything that defines a steering experiment (saved as a preset)."""

    saes: tuple[str, ...]
    """SAEs whose features are steered (each at its own hook point); an SAE without
    interventions is watched: its most changed features are reported."""
    interventions: tuple[Intervention, ...]
    strength: float = 1.0
    """Global multiplier of every coefficient."""
    units: Literal["activation", "max"] = "activation"
    """activation: coefficients in the feature's activation units; max: in multiples of the
    feature's largest activation in its analysis (as Neuronpedia does)."""
    model: str | None = None
    """Model to steer; None = the SAEs' model."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self) -> None:
        if not self.saes:
            raise InvalidInputError("No SAE chosen to steer with.", "Choose one («sae=NAME»).")
        if not self.interventions:
            raise InvalidInputError("No feature to steer.", "Add one («feature=INDEX=COEFFICIENT»).")
        if not math.isfinite(self.strength):
            raise InvalidInputError(f"The steering strength is {self.strength}, not a number.",
                                    "Give a finite number (1 = the coefficients as they are).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SteeringSpec:
        try:
            return cls(tuple(d["saes"]), tuple(Intervention(**i) for i in d["interventions"]),
                       float(d.get("strength", 1.0)), d.get("units", "activation"),
                       d.get("model"), GenerationConfig(**d.get("generation", {})))
        except (KeyError, TypeError) as err:
            raise InvalidInputError(f"The steering preset is incomplete or malformed ({err}).",
                                    "Save it again, or fix its JSON.") from err


class Steerer:
    """The model and SAEs of a spec, loaded once; :meth:`run` generates a comparison."""

    def __init__(self, ws: Workspace, spec: SteeringSpec, device: str = "auto",
                 loaded: LoadedModel | None = None) -> None:
        self.ws, self.spec = ws, spec
        self.saes: dict[str, tuple[Any, dict[str, Any], str]] = {}
        self.thresholds: dict[str, float | None] = {}
        """Per SAE, the input norm above which a token is massive (mistudio.core.activations.massive)."""
        models = set()
        for name in spec.saes:
            sae, saelens_cfg = open_sae(ws, name)
            self.thresholds[name] = sae_threshold(saelens_cfg.get("metadata") or {})
            art = ws.catalog.get("sae", name)
            if sae.cfg.transcoder:
                raise InvalidInputError(f"{name!r} is a transcoder; steering adds SAE features "
                                        "to one hook point.", "Choose an SAE.")
            self.saes[name] = (sae, art.summary, art.summary.hook)
            models.add(art.provenance.model)
        model = spec.model or next(iter(models))
        if spec.model and models - {spec.model, None}:
            raise InvalidInputError(f"The SAEs were trained on {', '.join(sorted(models))}, not "
                                    f"{spec.model}.", "Steer the model the SAEs belong to.")
        # the weights the SAEs were trained on (int8 / int4 when their activations were)
        quantize = next((ws.catalog.get("sae", n).provenance.model_quantization
                         for n in spec.saes), None) or "none"
        self.loaded = loaded or load_model(ws, model, device=device, quantize=quantize)
        d_model = self.loaded.info.d_model
        for name, (sae, _, hook) in self.saes.items():
            if sae.cfg.d_in != d_model:
                raise InvalidInputError(f"SAE {name!r} reads width {sae.cfg.d_in}, but "
                                        f"{model} has hidden size {d_model}.",
                                        "Choose an SAE of this model.")
            self.saes[name] = (sae.to(self.loaded.device).float(), self.saes[name][1], hook)

    def _scaled(self, iv: Intervention, sae_name: str) -> Intervention:
        if self.spec.units != "max" or iv.method in ("ablate",):
            return iv
        from mistudio.core.features.store import open_features

        store = open_features(self.ws, sae_name)
        store.check_index(iv.feature)
        peak = float(store.column("max_activation")[iv.feature])
        return Intervention(iv.feature, iv.coefficient * peak, iv.method, iv.sae)

    def sites(self, spec: SteeringSpec | None = None) -> dict[str, SiteSteer]:
        spec = spec or self.spec
        by_sae: dict[str, list[Intervention]] = {}
        for iv in spec.interventions:
            name = iv.sae or spec.saes[0]
            if name not in self.saes:
                raise InvalidInputError(f"Feature {iv.feature} names SAE {name!r}, which is not "
                                        "loaded.", f"Add «sae={name}».")
            by_sae.setdefault(name, []).append(self._scaled(iv, name))
        sites: dict[str, SiteSteer] = {}
        for name, items in by_sae.items():  # SAEs without interventions are only watched
            sae, _, hook = self.saes[name]
            if hook in sites:
                raise InvalidInputError(f"Two SAEs steer {hook}.", "Steer one SAE per hook point.")
            sites[hook] = SiteSteer(sae, items, spec.strength, 1, self.thresholds[name])
        return sites

    def run(self, prompt: str, spec: SteeringSpec | None = None,
            task: TaskState | None = None) -> Comparison:
        """Generate both sides (``spec`` may change coefficients of the loaded SAEs)."""
        spec = spec or self.spec
        sites = self.sites(spec)
        watch: dict[str, tuple[Any, list[int] | None]] = {}
        for iv in spec.interventions:
            sae, _, hook = self.saes[iv.sae or spec.saes[0]]
            feats = watch.setdefault(hook, (sae, []))[1]
            if feats is not None:
                feats.append(iv.feature)
        for sae, _, hook in self.saes.values():  # loaded without interventions: watched
            watch.setdefault(hook, (sae, None))
        return compare(self.loaded, sites, prompt, spec.generation, task, watch)


def run_steering(ws: Workspace, spec: SteeringSpec, prompt: str, task: TaskState | None = None,
                 device: str = "auto") -> dict[str, Any]:
    result = Steerer(ws, spec, device).run(prompt, task=task)
    return {"spec": spec.to_dict(), **result._asdict(),
            "plain": result.plain._asdict(), "steered": result.steered._asdict()}
