"""What a label run needs before it starts: the concepts of the analysed text, and an explainer
that can really write labels (a model too small to is replaced, saying so in one line)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mistudio.core.features.concepts.annotate import Annotations, annotate
from mistudio.core.features.concepts.catalogue import KEYS
from mistudio.core.features.examples import FeatureReader, TokenText
from mistudio.core.runtime.errors import InvalidInputError, NotFoundError
from mistudio.core.runtime.tasks import TaskState
from mistudio.core.store.workspace import Workspace


def concept_annotations(ws: Workspace, reader: FeatureReader, text: TokenText, concepts: bool,
                        task: TaskState) -> Annotations:
    """The concepts of every analysed token (from the cache beside the tokenized set once
    made); all-false when ``concepts`` is off (the token explainer needs none). Token texts
    come from the analysis's stored ones (newlines shown as ⏎ are read back as newlines)."""
    from mistudio.core.data.tokenization import open_tokenized

    rows = np.asarray(reader.rows)
    first, last = (int(rows[0, 0]), int(rows[-1, 0])) if len(rows) else (0, -1)
    if not concepts or not len(rows):
        length = int(rows[:, 1].max()) + 1 if len(rows) else 1
        return Annotations(np.zeros(((last - first + 1) * length, len(KEYS)), dtype=bool), first,
                           length, "not used")
    prov = reader.manifest.provenance
    try:
        tokenized = open_tokenized(ws, prov.tokenized)
    except NotFoundError as err:
        raise InvalidInputError(
            f"The tokenized set {prov.tokenized!r} this analysis was made from is gone, and "
            "concept labels read its text.", "Tokenize the dataset again with the same model "
            "and context length, or use «explainer=pattern».") from err
    return annotate(tokenized, first, last, lambda i: text(i).replace("⏎", "\n"), True, task)


def usable_explainer(ws: Workspace, cfg: Any, make: Any) -> tuple[Any, str]:
    """(the explainer to label with, a line saying why it is not the one asked for, or "")."""
    from mistudio.core.features.explainers import FormulaExplainer, with_scorer
    from mistudio.core.models.registry import EMBEDDED_NAME

    kind, _, model = cfg.explainer.partition(":")
    if kind == "llm" and not model:
        model = EMBEDDED_NAME
    if kind not in ("llm", "endpoint", "human"):
        return make(ws, cfg.explainer, cfg.endpoint, cfg.judge, cfg.prompt, cfg.scorer), ""
    explainer = make(ws, cfg.explainer if kind == "human" else f"{kind}:{model}", cfg.endpoint,
                     cfg.judge, cfg.prompt, None)
    if kind == "human":  # nothing to fall back to: a person's words need a capable judge
        why = _incapable(explainer.judge, "judge", cfg.endpoint)
        if why:
            raise InvalidInputError(why.split(";")[0] + "; no hand label was scored.",
                                    "Use a judge of 1B parameters or more, or a running server.")
        return with_scorer(explainer, cfg.scorer), ""
    for role, llm in (("explainer", explainer.llm), ("judge", explainer.judge)):
        note = _incapable(llm, role, cfg.endpoint)
        if note:
            return with_scorer(FormulaExplainer(True), cfg.scorer), note
    return with_scorer(explainer, cfg.scorer), ""


def _incapable(llm: Any, role: str, endpoint: str) -> str:
    """Why ``llm`` cannot be the label ``role`` (explainer, judge), or ""."""
    from mistudio.core.features.llm import MIN_EXPLAINER_PARAMS, EndpointLLM, LocalLLM

    if isinstance(llm, LocalLLM) and llm.n_params < MIN_EXPLAINER_PARAMS:
        return (f"{llm.name} has {llm.n_params / 1e6:,.0f}M parameters, too few to be a useful "
                f"label {role} (labels at chance); labelled with the concept explainer instead "
                "(an LLM of 1B parameters or more can be used).")
    if isinstance(llm, EndpointLLM) and not llm.reachable():
        return (f"No model server answers at {endpoint}; labelled with the concept explainer "
                f"instead (start the server to use {llm.name}).")
    return ""
