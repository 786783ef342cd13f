"""Tiny randomly initialised models of every supported family, built from configs (no hub)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
import transformers as T

VOCAB = 384
FAMILIES = ("gpt2", "llama", "gpt_neox", "qwen2", "phi3", "gemma", "gemma2")


def toy_config(family: str, n_layers: int = 3) -> T.PretrainedConfig:
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    llama_like = dict(num_hidden_layers=n_layers, hidden_size=32, intermediate_size=64,
                      num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, **common)
    if family == "gpt2":
        return T.GPT2Config(n_layer=n_layers, n_embd=32, n_head=2, n_positions=256, **common)
    if family == "llama":
        return T.LlamaConfig(**llama_like)
    if family == "qwen2":
        return T.Qwen2Config(**llama_like)
    if family == "phi3":
        return T.Phi3Config(**llama_like)
    if family == "gemma":
        return T.GemmaConfig(head_dim=8, **llama_like)
    if family == "gemma2":
        return T.Gemma2Config(head_dim=8, **llama_like)
    if family == "gemma3":  # Gemma 3's text model: sliding-window layers, sandwich norms
        return T.Gemma3TextConfig(head_dim=8, sliding_window=16,
                                  layer_types=["sliding_attention", "full_attention"] * 2,
                                  **{**llama_like, "num_hidden_layers": 4})
    if family == "gpt_neox":
        return T.GPTNeoXConfig(num_hidden_layers=n_layers, hidden_size=32, intermediate_size=64,
                               num_attention_heads=4, max_position_embeddings=256, **common)
    raise ValueError(family)


@cache
def toy_tokenizer() -> T.PreTrainedTokenizerFast:
    """A byte-level BPE with a few hundred tokens, trained on the built-in corpus in a second."""
    from pydoc_data import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(topics.topics.values())[:20], trainer)
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     pad_token="<pad>")


def toy_model(family: str, n_layers: int = 3, seed: int = 0) -> T.PreTrainedModel:
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(toy_config(family, n_layers))
    return model.eval()


def save_toy(family: str, folder: Path, n_layers: int = 3) -> Path:
    """A Hugging Face model folder (weights + tokenizer) for `mistudio models add`."""
    toy_model(family, n_layers).save_pretrained(folder)
    toy_tokenizer().save_pretrained(folder)
    return folder


def small_train_config(**kw: object) -> Any:
    """A TrainConfig for the toy activation set "acts" that trains in about a second."""
    from mistudio.core.sae.train_config import TrainConfig

    base = dict(activations="acts", expansion=4, k=8, steps=40, batch_size=256, log_every=5,
                checkpoint_every=10, warmup_steps=5, lr=3e-3, eval_tokens=1024)
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]
