"""Language models as explainers and judges: a local causal LM, or an OpenAI-compatible server on
this machine (Ollama, llama.cpp server, LM Studio, vLLM).

Measured on the embedded SmolLM2-135M-Instruct (as explainer and judge of its own layer 15):
scores at chance. A local model under :data:`MIN_EXPLAINER_PARAMS` is therefore not used: the
label run says so in one line and labels with the concept explainer instead.

A judge scores a label as a rule is scored (:mod:`.contexts`): it reads each held-out window and
says whether the feature fires in it (detection), and whether the marked tokens of a window are
the ones the label is about (fuzzing: true marks and decoys).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
import torch

from mistudio.core.features.examples import Example
from mistudio.core.runtime.errors import InvalidInputError, ResourceError
from mistudio.core.runtime.online import is_online

EXPLAIN_PROMPT = """We are studying a feature inside a language model. Below are text excerpts where \
it is active; the tokens where it is most active are marked with << >>.

{examples}

In at most eight words, what does the feature detect? Answer with the description only."""

DETECT_WINDOW_PROMPT = """A feature of a language model is described as: {label}
Text: {context}
Is the feature active anywhere in this text? Answer yes or no."""

FUZZ_PROMPT = """A feature of a language model is described as: {label}
Text, with some tokens marked with << >>: {context}
Are the marked tokens the ones this description is about? Answer yes or no."""

MIN_EXPLAINER_PARAMS = 1_000_000_000
"""Local models smaller than this write labels at chance (measured on the embedded 135M model):
they are not used as explainers or judges."""


class Explainer(Protocol):
    name: str

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[str]: ...

    def yes_probability(self, prompts: list[str]) -> list[float]: ...


def render(example: Example, text: Any, threshold: float = 0.5) -> str:
    """The example's window as text, marking tokens at >= threshold x its marked activation."""
    peak = max(example.activation, float(example.activations.max()), 1e-9)
    out = []
    for tid, a in zip(example.token_ids, example.activations, strict=True):
        t = text(int(tid)).replace("⏎", "\n")
        out.append(f"<<{t}>>" if a > 0 and a >= threshold * peak else t)
    return "".join(out).strip()


def clean_label(raw: str) -> str | None:
    """The first meaningful line of a reply, or None if there is nothing usable."""
    for line in raw.strip().splitlines():
        line = re.sub(r"^(\d+\.\s*)?(label|description|answer)?\s*:?\s*", "", line.strip(),
                      flags=re.I)
        line = re.sub(r"^the feature (detects|is detecting)( that)?\s*", "", line, flags=re.I)
        if line.rstrip().endswith(":"):  # "detects the following:" introduces, never says
            continue
        line = line.strip(" \"'`*.-")
        if len(line) >= 3 and any(c.isalpha() for c in line) and "<<" not in line:
            return line[:80]
    return None


class LocalLLM:
    """A causal LM from the workspace (HF folder or GGUF; the embedded model by default)."""

    def __init__(self, ws: Any, model: str, device: str = "auto") -> None:
        from mistudio.core.models.registry import load_model

        self.loaded = load_model(ws, model, device=device)
        self.tok = self.loaded.tokenizer
        self.name = f"llm:{model}"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.loaded.model.parameters())

    def _prompt(self, text: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": text}],
                                                tokenize=False, add_generation_prompt=True)
        return text + "\n"

    @torch.no_grad()
    def complete(self, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
        model = self.loaded.model
        enc = self.tok([self._prompt(p) for p in prompts], return_tensors="pt", padding=True,
                       add_special_tokens=False).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=self.tok.pad_token_id)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    @torch.no_grad()
    def yes_probability(self, prompts: list[str]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the first answer token."""
        model = self.loaded.model
        yes = [self.tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "Yes")]
        no = [self.tok.encode(w, add_special_tokens=False)[0] for w in ("no", "No")]
        enc = self.tok([self._prompt(p) for p in prompts], return_tensors="pt", padding=True,
                       add_special_tokens=False).to(model.device)
        logits = model(**enc).logits[:, -1].float()
        probs = logits.softmax(-1)
        p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
        return (p_yes / (p_yes + p_no).clamp_min(1e-9)).tolist()


class EndpointLLM:
    """An OpenAI-compatible chat endpoint on this machine, e.g. http://localhost:11434/v1."""

    def __init__(self, url: str, model: str, timeout: float = 120.0) -> None:
        host = urlparse(url).hostname or ""
        if host not in ("localhost", "127.0.0.1", "::1") and not is_online():
            raise InvalidInputError(f"{url} is not on this machine; miStudio sends nothing "
                                    "elsewhere while offline.",
                                    "Use a localhost endpoint, or allow «online».")
        self.url = url.rstrip("/")
        self.model, self.timeout, self.name = model, timeout, f"endpoint:{model}"

    def _chat(self, prompt: str, max_tokens: int) -> str:
        body = json.dumps({"model": self.model, "max_tokens": max_tokens, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        req = urllib.request.Request(f"{self.url}/chat/completions", body,
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
            return str(data["choices"][0]["message"]["content"])
        except (urllib.error.URLError, OSError, KeyError, ValueError) as err:
            raise ResourceError(f"The endpoint {self.url} did not answer ({err}).",
                                "Start the server (e.g. `ollama serve`) and check «endpoint».") from err

    def complete(self, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
        return [self._chat(p, max_new_tokens) for p in prompts]

    def reachable(self) -> bool:
        """Whether a server answers at the URL (its model list, within a few seconds)."""
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # it answered, if only to say the list is not served
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def yes_probability(self, prompts: list[str]) -> list[float]:
        return [1.0 if self._chat(p, 3).strip().lower().startswith("yes") else 0.0
                for p in prompts]


def explain_with_llm(llm: Explainer, examples: list[Example], text: Any,
                     prompt: str | None = None) -> str | None:
    shown = "\n".join(f"{i + 1}. {render(e, text)}" for i, e in enumerate(examples[:12]))
    template = prompt or EXPLAIN_PROMPT
    return clean_label(llm.complete([template.replace("{examples}", shown)])[0])


def _window_text(rows: np.ndarray, marks: np.ndarray | None, reader: Any, text: Any) -> str:
    tokens = np.asarray(reader.rows[rows, 2])
    out = []
    for i, t in enumerate(tokens):
        piece = text(int(t)).replace("⏎", "\n")
        out.append(f"<<{piece}>>" if marks is not None and marks[i] else piece)
    return "".join(out).strip()


def _said_yes(llm: Explainer, prompts: list[str], batch: int = 8) -> np.ndarray:
    probs: list[float] = []
    for i in range(0, len(prompts), batch):
        probs += llm.yes_probability(prompts[i:i + batch])
    return np.array(probs) > 0.5


def judge_windows(llm: Explainer, label: str, ctx: Any, reader: Any, text: Any) -> Any:
    """Detection and fuzzing of a label by an LLM judge on a feature's windows
    (:class:`~mistudio.core.features.contexts.Contexts`)."""
    from mistudio.core.features.contexts import Scores

    def windows(rows: np.ndarray, seg: np.ndarray, n: int) -> list[np.ndarray]:
        return [rows[seg == i] for i in range(n)]

    pos = windows(ctx.pos_rows, ctx.pos_seg, ctx.n_pos)
    neg = windows(ctx.neg_rows, ctx.neg_seg, ctx.n_neg)
    detect = [DETECT_WINDOW_PROMPT.format(label=label, context=_window_text(r, None, reader, text))
              for r in pos + neg]
    said = _said_yes(llm, detect)
    detection = float(0.5 * (said[:len(pos)].mean() + (~said[len(pos):]).mean())) \
        if pos and neg else None
    true_marks = windows(ctx.pos_active, ctx.pos_seg, ctx.n_pos)
    decoys = windows(ctx.pos_decoy, ctx.pos_seg, ctx.n_pos)
    usable = [i for i in range(ctx.n_pos) if true_marks[i].any() and decoys[i].any()]
    if not usable:
        return Scores(detection, None)
    fuzz = [FUZZ_PROMPT.format(label=label, context=_window_text(pos[i], m[i], reader, text))
            for m in (true_marks, decoys) for i in usable]
    said = _said_yes(llm, fuzz)
    k = len(usable)
    return Scores(detection, float(0.5 * (said[:k].mean() + (~said[k:]).mean())))
