"""Tiny causal language models made in-process: GPT-2-style and Llama-style, on a byte-level BPE tokenizer
trained here. For the tests, the causal-LM example and the memory benchmark (no model hub needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLES = ("gpt2", "llama")


def train_tokenizer(texts: Sequence[str], out_dir: str | Path, *, vocab_size: int, bos: bool) -> Any:
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``texts`` (GPT-2's scheme), saved to
    ``out_dir``; ``bos=True`` makes it start every text with ``<s>``, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>"] if bos else ["<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(texts), trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=specials[0], eos_token=specials[-1],
                                   model_input_names=["input_ids", "attention_mask"])  # as GPT-2's and Llama's
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def make_model(style: str, vocab_size: int, *, width: int = 32, layers: int = 2, context: int = 64, seed: int = 0) -> Any:
    """An untrained ``style`` decoder (GPT2LMHeadModel or LlamaForCausalLM) of ``layers`` blocks ``width`` wide."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if style not in STYLES:
        raise ValueError(f"Expected style to be one of {', '.join(STYLES)} but got {style!r}")
    torch.manual_seed(seed)
    if style == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=width, n_layer=layers,
                                          n_head=2, bos_token_id=0, eos_token_id=0))
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                        max_position_embeddings=context, bos_token_id=0, eos_token_id=1,
                                        tie_word_embeddings=False))


def train_causal_lm(model: Any, tokenizer: Any, texts: Sequence[str], *, steps: int, batch_size: int = 16,
                    max_length: int = 48, learning_rate: float = 3e-3, seed: int = 0) -> float:
    """Next-token training on random batches of ``texts`` (padding masked out of the loss); the last loss."""
    import torch

    from .finetune import train

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def step_loss(generator: Any) -> Any:
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        encoded = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length)["input_ids"]
        width = max(map(len, encoded))
        ids = torch.full((len(encoded), width), pad)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)], mask[row, : len(tokens)] = torch.tensor(tokens), 1
        return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss

    return train(model, step_loss, steps=steps, learning_rate=learning_rate, seed=seed)


def build_tiny_lm(out_dir: str | Path, texts: Sequence[str], *, style: str, vocab_size: int = 512, width: int = 32,
                  layers: int = 2, context: int = 64, steps: int = 200, seed: int = 0) -> Path:
    """Train a tokenizer and a ``style`` model on ``texts`` and save both to ``out_dir`` (a loadable HF directory)."""
    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, out_dir, vocab_size=vocab_size, bos=style == "llama")
    model = make_model(style, len(tokenizer), width=width, layers=layers, context=context, seed=seed)
    train_causal_lm(model, tokenizer, texts, steps=steps, max_length=context, seed=seed)
    model.save_pretrained(out_dir)
    return out_dir
