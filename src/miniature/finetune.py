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
) -> Any:
    """Train ``model`` for ``steps`` AdamW steps on random batches of (text, label); return it in eval mode."""
    import torch

    torch.manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([labels[i] for i in index])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()
