"""Each compression recipe really compresses, and its output loads through the normal spec path."""

from __future__ import annotations

import json

import onnx

from miniature import Runner, Settings
from miniature.compress import MANIFEST


def test_distilled_student_keeps_every_other_layer_and_loads(tiny_models):
    teacher = json.loads((tiny_models.teacher / "config.json").read_text())
    student = json.loads((tiny_models.student / "config.json").read_text())
    assert (teacher["num_hidden_layers"], student["num_hidden_layers"]) == (2, 1)
    manifest = json.loads((tiny_models.student / MANIFEST).read_text())
    assert manifest["recipe"] == "distillation" and manifest["kept_layers"] == [0]
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tiny_models.student) < size(tiny_models.teacher)
    runner = Runner(Settings(cache_dir=None))
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
    runner = Runner(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    for spec in (str(dropped), f"onnx:{onnx_int8}"):
        out = runner.model(spec).outputs(data)
        assert out.logits is None and out.cls.shape == (200, 32)
