"""A plain fine-tuning loop for sequence classifiers, shared by the demo and the tests' tiny models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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

    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([labels[i] for i in index])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress.update(step + 1, f"loss {loss.item():.3f}")
    return model.eval()


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
    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        index = torch.randint(len(starts), (batch_size,), generator=generator)
        loss = model(**{k: v[index] for k, v in inputs.items()}, start_positions=starts_t[index],
                     end_positions=ends_t[index]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if say is not None and (step % 100 == 0 or step == steps - 1):
            say(f"QA fine-tuning, step {step + 1}/{steps}: loss {loss.item():.2f}")
    return model.eval()
