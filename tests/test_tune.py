"""``miniature compress tune``: the sensitivity order against a brute-force recomputation, a gate stricter than plain
int8 reaches met on held-out data, the budget, the errors, and what a later gate says of a tuned candidate."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from scipy.special import log_softmax, rel_entr

from miniature.compress import MANIFEST

CLI = [sys.executable, "-m", "miniature.cli"]
INT8_MATMULS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@dataclass(frozen=True)
class TuneData:
    tune: Path  # 300 SST-2 dev sentences (rows 200-499), labelled
    held_out: Path  # the tiny models' eval set: rows 0-199, none of them in `tune`
    texts: list[str]  # the tuning texts


@pytest.fixture(scope="module")
def tune_data(tiny_models, shared_data, tmp_path_factory) -> TuneData:
    with open(shared_data / "sst2" / "dev.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[200:500]
    path = tmp_path_factory.mktemp("tune") / "tune.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"], *([r["sentence"].strip(), r["label"]] for r in rows)])
    return TuneData(path, tiny_models.eval_csv, [r["sentence"].strip() for r in rows])


def reference_log_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The HF classifier's float64 log-probabilities, one text at a time (no batch-mates)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        logits = [model(**tokenizer(t, truncation=True, max_length=128, return_tensors="pt")).logits[0].numpy()
                  for t in texts]
    return log_softmax(np.array(logits, dtype=np.float64), axis=-1)


def graph_kl(graph: Path, reference: np.ndarray, texts: list[str]) -> float:
    """Mean KL(reference || graph) over ``texts``, each run alone through onnxruntime (scipy's rel_entr)."""
    import onnxruntime
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(graph.parent)
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    logits = []
    for text in texts:
        feed = {k: v.astype(np.int64) for k, v in tokenizer(text, truncation=True, max_length=128,
                                                             return_tensors="np").items() if k in names}
        logits.append(session.run(["logits"], feed)[0][0])
    candidate = log_softmax(np.array(logits, dtype=np.float64), axis=-1)
    return float(rel_entr(np.exp(reference), np.exp(candidate)).sum(axis=1).mean())


def weight_nodes(graph: Path, layer: str) -> list[str]:
    """The nodes of module ``layer`` that onnxruntime's dynamic quantizer makes int8 (Gemm under its rewritten
    name too), found from the graph alone."""
    model = onnx.load(str(graph))
    weights = {t.name for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Gather")
             and any(i in weights for i in n.input) and n.name.rsplit("/", 1)[0] == layer]
    return [name for n in nodes for name in ([n.name, f"{n.name}_MatMul"] if n.op_type == "Gemm" else [n.name])]


@pytest.fixture(scope="module")
def plain_kl(tiny_models, tune_data) -> dict[str, float]:
    """Plain dynamic onnx-int8's KL from the teacher, brute force, on the tuning and the held-out texts."""
    with open(tune_data.held_out, encoding="utf-8") as handle:
        held_out = [r["text"] for r in csv.DictReader(handle)]
    return {"tune": graph_kl(tiny_models.onnx_int8, reference_log_probabilities(tiny_models.teacher, tune_data.texts),
                             tune_data.texts),
            "held_out": graph_kl(tiny_models.onnx_int8, reference_log_probabilities(tiny_models.teacher, held_out),
                                 held_out)}


@pytest.fixture(scope="module")
def tuned(tiny_models, tune_data, plain_kl, tmp_path_factory):
    """The teacher's dynamic onnx-int8, tuned through the CLI to a KL four times smaller than plain int8's."""
    out = tmp_path_factory.mktemp("tuned") / "candidate"
    bound = plain_kl["tune"] / 4
    result = run("compress", "tune", str(tiny_models.teacher), str(out), "--recipe", "onnx-int8",
                 "--tune-data", str(tune_data.tune), "--threshold", f"kl_divergence={bound!r}")
    return result, out, bound


@pytest.mark.parametrize("direction", ["quantize-alone", "keep-float"])
def test_the_sensitivity_order_is_the_brute_force_one(tiny_models, tune_data, tmp_path, direction):
    from miniature.characteristics.base import Threshold
    from miniature.compress import quantize_onnx
    from miniature.tune import tune

    reference = reference_log_probabilities(tiny_models.teacher, tune_data.texts)
    plain = graph_kl(tiny_models.onnx_int8, reference, tune_data.texts)
    tuning = tune(tiny_models.teacher, tmp_path / "out", recipe="onnx-int8", tune_data=str(tune_data.tune),
                  thresholds={"kl_divergence": Threshold(plain / 4)}, max_trials=2, say=lambda line: None,
                  sensitivity_by=direction)
    assert len(tuning.sensitivity) == len(tuning.layers) >= 12  # 6 Linear in each of 2 layers, embeddings, head
    # Each layer quantized alone in the float export (or kept alone in float in the int8 one), quantized and run
    # here without the engine: the KL it adds (or takes away), brute force.
    alone = direction == "quantize-alone"
    # A copy: onnxruntime's quantizer writes a temporary model beside its input, and other workers read the original.
    float_graph = tmp_path / "float" / "model.onnx"
    shutil.copytree(tiny_models.onnx.parent, float_graph.parent)
    base = graph_kl(float_graph, reference, tune_data.texts) if alone else plain
    brute = {}
    for row in tuning.sensitivity:
        kept = [n for other in tuning.layers if other != row["layer"] for n in weight_nodes(float_graph, other)] \
            if alone else weight_nodes(float_graph, row["layer"])
        graph = quantize_onnx(float_graph, tmp_path / "brute" / str(len(brute)), nodes_to_exclude=kept)
        brute[row["layer"]] = graph_kl(graph, reference, tune_data.texts) - base
    measured = {row["layer"]: row["drift"]["kl_divergence"] for row in tuning.sensitivity}
    np.testing.assert_allclose([measured[k] for k in brute], list(brute.values()), rtol=1e-4, atol=1e-10)
    # Most harmful first: the largest KL a layer adds alone (or takes away alone), layers within 1e-10 may swap.
    harm = {k: v if alone else -v for k, v in brute.items()}
    order = [row["layer"] for row in tuning.sensitivity]
    expected = sorted(harm, key=lambda k: -harm[k])
    for i, (got, want) in enumerate(zip(order, expected)):
        assert got == want or abs(harm[got] - harm[want]) < 1e-10, (i, got, want)
    assert harm[order[0]] > 0


def test_a_gate_four_times_stricter_than_plain_int8_is_met_on_held_out_data(tiny_models, tune_data, plain_kl,
                                                                          tuned, tmp_path):
    result, out, bound = tuned
    assert result.returncode == 0, result.stderr
    assert "every gate holds on the tuning data with" in result.stdout
    assert "gate the result on held-out data" in result.stdout
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["recipe"] == "onnx-dynamic-int8-tuned" and manifest["tuning"]["found"] is True
    kept = manifest["tuning"]["float_layers"]
    assert 0 < len(kept) < manifest["tuning"]["layers"]
    # Still an int8 model: most of its matmuls are integer ones.
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert sum(op in INT8_MATMULS for op in ops) >= 6
    tuning = manifest["tuning"]
    assert set(tuning["models"]) == {"plain", "tuned", "float"}
    assert tuning["models"]["tuned"]["bytes"] < tuning["models"]["float"]["bytes"]
    # On held-out data (none of its texts was tuned on), a gate twice as strict as plain int8's KL there holds:
    # through the CLI, as a release pipeline would gate it.
    strict = plain_kl["held_out"] / 2
    gate = run("compare", "--reference", str(tiny_models.teacher), "--candidate", f"onnx:{out / 'model.onnx'}",
               "--eval", str(tune_data.held_out), "--threshold", f"kl_divergence={strict!r}", "--no-cache",
               "--report", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "was tuned" not in gate.stdout  # held-out data: nothing to warn about
    report = json.loads((tmp_path / "r.json").read_text())
    (model,) = [m for m in report["models"].values() if m.get("tuning")]
    assert model["tuning"]["float_layers"] == kept and report["warnings"] == []
    html = (tmp_path / "r.html").read_text()
    assert "Tuned candidates: which layers caused the drift" in html and kept[0] in html


def test_gating_a_tuned_candidate_on_its_tuning_data_warns(tiny_models, tune_data, tuned, tmp_path):
    _, out, bound = tuned
    # The same texts, in another order and another file: still the tuning data.
    with open(tune_data.tune, encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    shuffled = tmp_path / "again.csv"
    with open(shuffled, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([rows[0], *reversed(rows[1:])])
    gate = run("compare", "--reference", str(tiny_models.teacher), "--candidate", f"onnx:{out / 'model.onnx'}",
               "--eval", str(shuffled), "--threshold", f"kl_divergence={bound!r}", "--no-cache",
               "--report", str(tmp_path / "r.json"))
    assert gate.returncode == 0, gate.stderr
    assert re.search(r"was tuned \(miniature compress tune\) on 300 of the 300 texts of '[^']*again\.csv', which "
                     r"gates it here: gate it on held-out data", gate.stdout), gate.stdout
    assert json.loads((tmp_path / "r.json").read_text())["warnings"]
    assert "warning: " in run("report", str(tmp_path / "r.json")).stdout


def test_a_budget_that_ends_first_writes_the_nearest_candidate_and_exits_1(tiny_models, tune_data, tmp_path):
    out = tmp_path / "nearest"
    result = run("compress", "tune", str(tiny_models.teacher), str(out), "--recipe", "onnx-int8",
                 "--tune-data", str(tune_data.tune), "--threshold", "kl_divergence=1e-12", "--max-trials", "1")
    assert result.returncode == 1, result.stderr
    assert "no variant met every gate within 1 search trials" in result.stdout
    assert (out / "model.onnx").is_file()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["tuning"]["found"] is False
    assert [t["label"] for t in manifest["tuning"]["trials"]][-1].startswith("search: ")


def test_a_gate_the_float_model_fails_is_said_at_once(tiny_models, tune_data, tmp_path):
    result = run("compress", "tune", str(tiny_models.teacher), str(tmp_path / "out"), "--recipe", "onnx-int8",
                 "--tune-data", str(tune_data.tune), "--threshold", "kl_divergence=0")
    assert result.returncode == 1
    assert "the float model itself fails the gates" in result.stdout and "sensitivity" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "ood_agreement=0.5"], "ood_agreement needs"),
    (["--recipe", "onnx-int8"], "needs at least one --threshold"),
    (["--threshold", "kl_divergence=0.1"], "needs --recipe onnx-int8 or --recipe torch-int8"),
    (["--recipe", "torch-int8", "--texts", "{tune}", "--threshold", "kl_divergence=0.1"], "takes none"),
])
def test_usage_errors_name_what_is_missing(tiny_models, tune_data, tmp_path, args, message):
    args = [a.replace("{tune}", str(tune_data.tune)) for a in args]
    if "--recipe" not in args and "ood_agreement=0.5" in args:
        args = ["--recipe", "onnx-int8", *args]
    result = run("compress", "tune", str(tiny_models.teacher), str(tmp_path / "out"), "--tune-data",
                 str(tune_data.tune), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_torch_int8_tuning_leaves_the_chosen_linear_layers_in_float(tiny_models, tune_data, tmp_path):
    import torch

    from miniature import Session, Settings
    from miniature.characteristics.base import Threshold
    from miniature.compress import quantize_torch
    from miniature.tune import tune

    session = Session(Settings(reference=str(tiny_models.teacher), eval=str(tune_data.tune), cache_dir=None))
    plain = quantize_torch(tiny_models.teacher, tmp_path / "plain")
    plain_kl = float(session.prepare("kl_divergence", str(plain)).result)
    tuning = tune(tiny_models.teacher, tmp_path / "tuned", recipe="torch-int8", tune_data=str(tune_data.tune),
                  thresholds={"kl_divergence": Threshold(plain_kl / 4)}, say=lambda line: None)
    assert tuning.found and 0 < len(tuning.best.kept) < len(tuning.layers)
    manifest = json.loads((tmp_path / "tuned" / MANIFEST).read_text())
    assert manifest["load"] == {"quantize": "int8", "keep_float": list(tuning.best.kept)}
    # Loaded as a gate loads it: the kept layers are float Linear modules, the others dynamic int8 ones.
    model = session.model(str(tmp_path / "tuned"))
    tuned_kl = float(session.prepare("kl_divergence", str(tmp_path / "tuned")).result)
    assert tuned_kl == pytest.approx(tuning.best.values["kl_divergence"], rel=1e-9)
    modules = dict(session.engine.backend(model).model.named_modules())
    for name in tuning.layers:
        quantized = isinstance(modules[name], torch.ao.nn.quantized.dynamic.Linear)
        assert quantized == (name not in tuning.best.kept), name


def test_an_unreadable_manifest_is_a_model_error_not_a_float_model(tiny_models, tune_data, tmp_path):
    from miniature.compress import quantize_torch

    candidate = quantize_torch(tiny_models.teacher, tmp_path / "int8")
    (candidate / MANIFEST).write_text('{"load": {"quantize": "int8"')  # cut short: it must not load as float
    result = run("compare", "--reference", str(tiny_models.teacher), "--candidate", str(candidate),
                 "--eval", str(tune_data.held_out), "--checks", "kl_divergence", "--no-cache")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "miniature-manifest.json cannot be read as JSON" in result.stderr


def test_the_full_demo_tunes_its_static_int8_candidate_to_its_own_gates(tiny_models, tune_data, tmp_path):
    from miniature import demo

    # The demo writes tune.csv beside its eval set: sentences drawn as the eval set's, none of them in it.
    texts, labels = demo.demo_data(tmp_path, quick=True, say=lambda line: None)[:2]
    with open(tmp_path / "tune.csv", encoding="utf-8") as handle:
        tuned_on = list(csv.DictReader(handle))
    with open(tmp_path / "eval.csv", encoding="utf-8") as handle:
        evaluated = {r["text"] for r in csv.DictReader(handle)}
    assert len(tuned_on) == demo.TUNE_TEXTS and {r["label"] for r in tuned_on} == {"negative", "positive"}
    assert not {r["text"] for r in tuned_on} & (evaluated | set(texts))
    lines: list[str] = []
    demo.tune_static(tmp_path, tiny_models.teacher, tmp_path / "tuned", texts[:64], say=lines.append, step="[4/5]")
    tuning = json.loads((tmp_path / "tuned" / MANIFEST).read_text())["tuning"]
    assert tuning["recipe"] == "onnx-static-int8" and tuning["gate"] == "lower"
    # The demo's gates that need eval data alone, with the demo's bounds (ood_agreement needs more).
    assert tuning["thresholds"] == {"error_jaccard": 0.5, "knn_agreement": 0.3, "top1_agreement": 0.92,
                                    "kl_divergence": 0.1}
    assert tuning["threshold_params"] == {"knn_agreement": {"k": 10}}
    assert lines[0].startswith("[4/5] tuning the static int8 candidate") and "layers in float" in lines[-1]
    assert (tmp_path / "tuned" / "model.onnx").is_file()
