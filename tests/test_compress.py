"""Each compression recipe really compresses, and its output loads through the normal spec path."""

from __future__ import annotations

import json

import onnx
import pytest
from loading import load

from miniature import Session, Settings
from miniature.compress import MANIFEST


def test_distilled_student_keeps_every_other_layer_and_loads(tiny_models):
    teacher = json.loads((tiny_models.teacher / "config.json").read_text())
    student = json.loads((tiny_models.student / "config.json").read_text())
    assert (teacher["num_hidden_layers"], student["num_hidden_layers"]) == (2, 1)
    manifest = json.loads((tiny_models.student / MANIFEST).read_text())
    assert manifest["recipe"] == "distillation" and manifest["kept_layers"] == [0]
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tiny_models.student) < size(tiny_models.teacher)
    runner = Session(Settings(cache_dir=None))
    out = runner.model(str(tiny_models.student)).outputs(runner.dataset(str(tiny_models.eval_csv)))
    assert out.logits.shape == (200, 2)


def test_onnx_dynamic_quantization_stores_int8_weights(tiny_models):
    fp32, int8 = onnx.load(str(tiny_models.onnx)), onnx.load(str(tiny_models.onnx_int8))
    int8_weights = [t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert not [t for t in fp32.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 12  # q, k, v, output, intermediate, output dense in each of 2 layers
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in int8.graph.node}
    assert tiny_models.onnx_int8.stat().st_size < tiny_models.onnx.stat().st_size
    assert json.loads((tiny_models.onnx_int8.parent / MANIFEST).read_text())["recipe"] == "onnx-dynamic-int8"
    assert (tiny_models.onnx_int8.parent / "tokenizer.json").is_file()


def test_layer_dropping_and_encoder_export_of_a_base_encoder(tiny_models, tmp_path):
    from miniature.compress import drop_layers, export_onnx, quantize_onnx

    dropped = drop_layers(tiny_models.base_encoder, tmp_path / "dropped", keep_every=2)
    assert json.loads((dropped / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((dropped / MANIFEST).read_text())["kept_layers"] == [0]
    onnx_int8 = quantize_onnx(export_onnx(tiny_models.base_encoder, tmp_path / "enc"), tmp_path / "enc-int8")
    graph = onnx.load(str(onnx_int8)).graph
    assert [o.name for o in graph.output] == ["last_hidden_state"]
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    for spec in (str(dropped), f"onnx:{onnx_int8}"):
        out = runner.model(spec).outputs(data)
        assert out.logits is None and out.cls.shape == (200, 32)


def test_torch_int8_candidate_loads_quantized_through_its_manifest(tiny_models, tmp_path):
    import torch

    from miniature.compress import quantize_torch
    from miniature.models import open_backend, parse_model_spec

    candidate = quantize_torch(tiny_models.teacher, tmp_path / "int8")
    assert json.loads((candidate / MANIFEST).read_text())["load"] == {"quantize": "int8"}
    backend = open_backend(parse_model_spec(str(candidate)))
    load(backend)
    layer = backend.model.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, torch.ao.nn.quantized.dynamic.Linear) and layer.weight().dtype == torch.qint8
    # Same files as the teacher but quantized on load: another cache key, other outputs.
    runner = Session(Settings(cache_dir=tmp_path / "cache"))
    data = runner.dataset(str(tiny_models.eval_csv))
    int8, fp32 = runner.model(str(candidate)).outputs(data), runner.model(str(tiny_models.teacher)).outputs(data)
    assert runner.stats.computed == 2 and not (int8.logits == fp32.logits).all()


def test_static_onnx_quantization_calibrates_activations(tiny_models, shared_data, tmp_path):
    from miniature.compress import quantize_onnx

    texts = [line.rsplit("\t", 1)[0] for line in (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:33]]
    static = quantize_onnx(tiny_models.onnx, tmp_path / "static", calibration_texts=texts)
    graph = onnx.load(str(static)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    manifest = json.loads((static.parent / MANIFEST).read_text())
    assert manifest["recipe"] == "onnx-static-int8" and manifest["calibration_texts"] == 32
    runner = Session(Settings(cache_dir=None))
    out = runner.model(f"onnx:{static}").outputs(runner.dataset(str(tiny_models.eval_csv)))
    assert out.logits.shape == (200, 2)


def test_magnitude_pruning_reaches_the_asked_sparsity(tiny_models, tmp_path):
    from safetensors.numpy import load_file

    from miniature.compress import prune_magnitude

    pruned = prune_magnitude(tiny_models.teacher, tmp_path / "pruned", sparsity=0.6)
    weights = load_file(str(pruned / "model.safetensors"))
    encoder = [v for k, v in weights.items() if ".encoder.layer." in k and k.endswith(".weight") and v.ndim == 2]
    zeros = sum(int((w == 0).sum()) for w in encoder) / sum(w.size for w in encoder)
    assert zeros == pytest.approx(0.6, abs=0.005)
    assert json.loads((pruned / MANIFEST).read_text())["measured_sparsity"] == pytest.approx(zeros, abs=1e-6)
    assert (load_file(str(tiny_models.teacher / "model.safetensors"))["classifier.weight"] == weights["classifier.weight"]).all()
    runner = Session(Settings(cache_dir=None))
    out = runner.model(str(pruned)).outputs(runner.dataset(str(tiny_models.eval_csv)))
    assert out.logits.shape == (200, 2)
    with pytest.raises(ValueError, match=r"Expected a sparsity in \[0, 1\) but got sparsity=1.0"):
        prune_magnitude(tiny_models.teacher, tmp_path / "x", sparsity=1.0)
