"""The one training loop: the demo's fine-tuning, ``miniature compress distill`` and the tests' tiny models all
train through :func:`train`, each giving only how a step's loss is computed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def train(model: Any, step_loss: Callable[[Any], Any], *, steps: int, learning_rate: float, seed: int = 0,
          progress: Callable[[int, float], None] | None = None) -> float:
    """``steps`` AdamW steps on ``model``: each step's loss is ``step_loss(generator)``, which draws its batch with
    ``generator`` (a torch generator seeded with ``seed``, so batches repeat run after run); ``progress(step,
    loss)`` after each step. Leaves the model in eval mode; returns the last step's loss (NaN for no steps).

    The global torch seed is the caller's to set (dropout draws from it), where its model was built."""
    import torch

    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = step_loss(generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(step + 1, loss.item())
    model.eval()
    return float(loss.detach())


def train_classifier(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    max_length: int = 64,
    seed: int = 0,
    progress: Any = None,
) -> Any:
    """Train ``model`` for ``steps`` AdamW steps on random batches of (text, label); return it in eval mode.
    ``progress``: a :class:`~miniature.progress.Progress` told each step and its loss."""
    import torch

    def step_loss(generator: Any) -> Any:
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model(**batch, labels=torch.tensor([labels[i] for i in index])).loss

    torch.manual_seed(seed)
    train(model, step_loss, steps=steps, learning_rate=learning_rate, seed=seed,
          progress=None if progress is None else lambda step, loss: progress.update(step, f"loss {loss:.3f}"))
    return model


def train_qa_model(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict],
    *,
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    max_length: int = 192,
    stride: int = 64,
    keep_answerless_windows: bool = True,
    seed: int = 0,
    say: Any = None,
) -> Any:
    """Train an extractive-QA ``model`` on SQuAD-style ``rows`` ({question, context, answers[{text, answer_start}]}).

    Contexts are cut into windows as the QA backends cut them; a window's label is its first
    answer's token span, or the [CLS] token when the question is unanswerable or the answer is
    outside the window (BERT's SQuAD 2.0 recipe). ``keep_answerless_windows=False`` drops the
    latter windows of answerable questions, so that a tiny model learns spans at all.
    """
    import torch

    encoded = tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding="max_length", return_tensors="pt")
    windows, starts, ends = [], [], []
    for w, q in enumerate(encoded["overflow_to_sample_mapping"].tolist()):
        start = end = 0
        if rows[q]["answers"]:
            first = rows[q]["answers"][0]
            a, b = first["answer_start"], first["answer_start"] + len(first["text"])
            sequence = encoded.sequence_ids(w)
            tokens = [t for t, (s, e) in enumerate(encoded["offset_mapping"][w].tolist()) if sequence[t] == 1 and s < b and e > a]
            if tokens:
                start, end = tokens[0], tokens[-1]
            elif not keep_answerless_windows:
                continue
        windows.append(w)
        starts.append(start)
        ends.append(end)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    inputs = {k: encoded[k][windows] for k in keys}
    starts_t, ends_t = torch.tensor(starts), torch.tensor(ends)

    def step_loss(generator: Any) -> Any:
        index = torch.randint(len(starts), (batch_size,), generator=generator)
        return model(**{k: v[index] for k, v in inputs.items()}, start_positions=starts_t[index],
                     end_positions=ends_t[index]).loss

    def report(step: int, loss: float) -> None:
        if say is not None and (step % 100 == 1 or step == steps):
            say(f"QA fine-tuning, step {step}/{steps}: loss {loss:.2f}")

    torch.manual_seed(seed)
    train(model, step_loss, steps=steps, learning_rate=learning_rate, seed=seed, progress=report)
    return model
