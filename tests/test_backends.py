"""Model backends on tiny in-process models: HF directories, ONNX graphs, torch dynamic int8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from loading import load

from miniature import ModelLoadError, Session, Settings
from miniature.models import forward_counter, open_backend, parse_model_spec


def run(spec: str, texts, *, batch_size: int = 16, max_length: int = 64):
    backend = open_backend(parse_model_spec(spec))
    load(backend)
    return backend, backend.run(texts, batch_size=batch_size, max_length=max_length)


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list[str]:
    lines = (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:61]
    return [line.rsplit("\t", 1)[0].strip() for line in lines]


def test_hf_and_onnx_export_compute_the_same_logits_and_cls(tiny_models, texts):
    _, hf = run(str(tiny_models.teacher), texts)
    _, onnx = run(f"onnx:{tiny_models.onnx}", texts)
    assert hf.logits.shape == (60, 2) and hf.cls.shape == (60, 32)
    np.testing.assert_allclose(onnx.logits, hf.logits, atol=1e-4)
    np.testing.assert_allclose(onnx.cls, hf.cls, atol=1e-4)


def test_outputs_do_not_depend_on_batch_size_or_order(tiny_models, texts):
    _, one = run(str(tiny_models.teacher), texts, batch_size=1)
    _, many = run(str(tiny_models.teacher), texts, batch_size=64)
    np.testing.assert_allclose(one.logits, many.logits, atol=1e-5)
    _, reversed_ = run(str(tiny_models.teacher), texts[::-1], batch_size=7)
    np.testing.assert_allclose(reversed_.logits[::-1], one.logits, atol=1e-5)


def test_batches_are_padded_to_their_longest_member_not_to_max_length(tiny_models, texts, monkeypatch):
    backend = open_backend(parse_model_spec(str(tiny_models.teacher)))
    load(backend)
    widths = []
    forward = backend.forward
    monkeypatch.setattr(backend, "forward", lambda batch, *rest: (widths.append(batch["input_ids"].shape[1]), forward(batch, *rest))[1])
    backend.run(texts, batch_size=8, max_length=512)
    longest = max(len(backend.tokenizer(t)["input_ids"]) for t in texts)
    assert widths[0] == min(longest, 128)  # 128 = the tiny model's max_position_embeddings
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0]


def test_torch_dynamic_int8_spec_quantizes_linear_layers(tiny_models, texts):
    import torch

    backend, out = run(f"hf:{tiny_models.teacher}?quantize=int8", texts)
    layer = backend.model.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, torch.ao.nn.quantized.dynamic.Linear)
    _, fp32 = run(str(tiny_models.teacher), texts)
    assert not np.array_equal(out.logits, fp32.logits)  # the weights really changed
    assert (out.predictions == fp32.predictions).mean() > 0.8


def test_a_classifier_config_without_trained_head_weights_is_refused(tiny_models, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.base_encoder, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    backend = open_backend(parse_model_spec(str(broken)))
    with pytest.raises(ModelLoadError, match=r"has no trained classification head: classifier.bias, classifier.weight were newly initialised"):
        load(backend)


def test_a_base_encoder_gives_embeddings_but_no_predictions(tiny_models, texts):
    from miniature import error_jaccard

    backend, out = run(str(tiny_models.base_encoder), texts[:5])
    assert out.logits is None and out.cls.shape == (5, 32) and out.mean.shape == (5, 32)
    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    with pytest.raises(ModelLoadError, match=r"has no classification head \(architectures: BertModel\), so it makes no predictions, which the prediction-error check needs"):
        error_jaccard(runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.base_encoder)), data)


def test_mean_pooling_averages_only_unpadded_tokens(tiny_models, texts):
    backend = open_backend(parse_model_spec(str(tiny_models.teacher)))
    load(backend)
    batched = backend.run(texts[:8], batch_size=8, max_length=64)
    single = backend.run(texts[:8], batch_size=1, max_length=64)
    np.testing.assert_allclose(batched.mean, single.mean, atol=1e-5)
    assert not np.allclose(batched.mean, batched.cls)


def test_onnx_outputs_chosen_by_name_or_index_and_bad_choices_listed(tiny_models, texts):
    backend, out = run(f"onnx:{tiny_models.onnx}?output=0&hidden=last_hidden_state", texts[:4])
    assert backend.head == {"logits": "logits"} and out.cls.shape == (4, 32)
    with pytest.raises(ModelLoadError, match=r"asks for output='probs', but the graph's outputs are 0: logits, 1: last_hidden_state"):
        run(f"onnx:{tiny_models.onnx}?output=probs", texts[:4])


def test_onnx_tokenizer_from_the_spec_when_not_beside_the_file(tiny_models, texts, tmp_path):
    shutil.copy2(tiny_models.onnx, tmp_path / "model.onnx")
    with pytest.raises(ModelLoadError, match=r"needs its tokenizer: put the tokenizer files .*\?tokenizer=<dir>"):
        run(f"onnx:{tmp_path / 'model.onnx'}", texts[:2])
    _, out = run(f"onnx:{tmp_path / 'model.onnx'}?tokenizer={tiny_models.teacher}", texts[:2])
    assert out.logits.shape == (2, 2)


def test_hub_ids_fail_clearly_when_the_hub_is_unreachable():
    with pytest.raises(ModelLoadError, match=r"Could not fetch model 'acme/no-such-model' .* from the Hugging Face Hub"):
        open_backend(parse_model_spec("hf:acme/no-such-model"))


def test_runner_counts_one_forward_run_per_model_and_dataset(tiny_models, tmp_path):
    runner = Session(Settings(cache_dir=None, base_dir=tmp_path))
    data = runner.dataset(str(tiny_models.eval_csv))
    runs = forward_counter.runs
    ref = runner.model(str(tiny_models.teacher))
    for spec in (str(tiny_models.student), f"onnx:{tiny_models.onnx_int8}"):
        for _ in range(3):
            ref.outputs(data), runner.model(spec).outputs(data)
    assert forward_counter.runs - runs == 3 and runner.stats.computed == 3
