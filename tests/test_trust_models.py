"""Trust in what a model computes: no random model passes, tokenizers compared as data, outputs that do not depend
on batch-mates, multiple choice read as lm-evaluation-harness reads it, and a model that is not what the task
reads is named as such (issue #21)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CLI = [sys.executable, "-m", "miniature.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def compare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "compare", *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


# -- 1. a random model never passes ------------------------------------------------------------------------------


def test_a_config_without_model_type_is_refused_not_built_at_random(tiny_models, tmp_path):
    broken = tmp_path / "bert-large"  # transformers would guess a default architecture from this folder name
    shutil.copytree(tiny_models.student, broken)
    (broken / "config.json").write_text("{}")
    result = compare("--reference", str(tiny_models.teacher), "--candidate", str(broken), "--eval",
                     str(tiny_models.eval_csv), "--no-cache", "--threshold", "knn_agreement=0.0", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Model 'bert-large'" in result.stderr and "has no model_type" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_weights_a_load_would_leave_untrained_are_named(tiny_models, tmp_path):
    from safetensors.numpy import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_models.teacher, partial)
    weights = load_file(str(partial / "model.safetensors"))
    dropped = sorted(k for k in weights if ".encoder.layer.1." in k)
    save_file({k: v for k, v in weights.items() if k not in dropped}, str(partial / "model.safetensors"))
    result = compare("--reference", str(tiny_models.teacher), "--candidate", str(partial), "--eval",
                     str(tiny_models.eval_csv), "--no-cache", "--checks", "knn_agreement", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"its weight files lack {len(dropped)} of the weights its config.json describes" in result.stderr
    assert "encoder.layer.1." in result.stderr and "give the complete checkpoint" in result.stderr


def test_weight_files_that_are_not_safetensors_are_a_model_error_not_a_crash(tiny_models, tmp_path):
    """Reading the parameter count from a safetensors header took its first 8 bytes as a length and asked for
    that many (b"not weig" is 7 exabytes): a MemoryError, exit 4. Now the load names the model."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.teacher, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    result = compare("--reference", str(tiny_models.teacher), "--candidate", str(broken), "--eval",
                     str(tiny_models.eval_csv), "--no-cache", "--checks", "error_jaccard", "--report", "r.json", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Could not load model 'broken'" in result.stderr and "internal error" not in result.stderr


# -- 6. tokenizers are the same when they map text to the same ids ------------------------------------------------


def test_a_reformatted_tokenizer_is_the_same_tokenizer_and_a_different_one_is_named(tiny_lms, tmp_path):
    from miniature import NotApplicable, Session, Settings, kl_divergence, top1_agreement

    reindented = tmp_path / "reindented"
    shutil.copytree(tiny_lms.gpt2_dropped, reindented)
    data = json.loads((reindented / "tokenizer.json").read_text(encoding="utf-8"))
    (reindented / "tokenizer.json").write_text(json.dumps(data, indent=4, sort_keys=True), encoding="utf-8")
    session = Session(Settings(cache_dir=None, task="causal-lm", max_length=32))
    texts = session.dataset(str(tiny_lms.texts))
    gpt2 = session.model(str(tiny_lms.gpt2))
    original = kl_divergence(gpt2, session.model(str(tiny_lms.gpt2_dropped)), texts)
    assert float(kl_divergence(gpt2, session.model(str(reindented)), texts)) == float(original)
    assert float(top1_agreement(gpt2, session.model(str(reindented)), texts)) == original.top1_agreement

    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_lms.gpt2_dropped, renamed)
    vocab = data["model"]["vocab"]
    token = next(t for t, i in vocab.items() if i == 300)
    data["model"]["vocab"] = {("zz" if t == token else t): i for t, i in vocab.items()}
    (renamed / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(NotApplicable, match=rf"do not share a tokenizer \(token id 300 is {token!r} in the first and "
                                            rf"'zz' in the second\)"):
        kl_divergence(gpt2, session.model(str(renamed)), texts)


def test_tokenizer_identity_reads_every_kind_of_vocabulary_file(tmp_path):
    from miniature.models.tokenizer import tokenizer_identity

    wordpiece = tmp_path / "wordpiece"
    wordpiece.mkdir()
    (wordpiece / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n##s\n", encoding="utf-8")
    (wordpiece / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]", "unk_token": "[UNK]"}))
    found = tokenizer_identity(wordpiece)
    assert found.vocabulary == {0: "[PAD]", 1: "[UNK]", 2: "the", 3: "##s"} and found.special == {"[PAD]": 0, "[UNK]": 1}
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    (bpe / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    (bpe / "merges.txt").write_text("#version: 0.2\na b\n")
    assert tokenizer_identity(bpe).merges == (("a", "b"),)
    assert tokenizer_identity(tmp_path) is None  # no vocabulary file at all


# -- 7. outputs never depend on batch-mates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_texts(shared_data: Path) -> list[str]:
    lines = (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    return [line.rsplit("\t", 1)[0].strip() for line in lines]


@pytest.fixture(scope="module")
def backends(tiny_models):
    from loading import load

    from miniature.models import open_backend, parse_model_spec

    specs = {"onnx fp32": f"onnx:{tiny_models.onnx}", "onnx int8": f"onnx:{tiny_models.onnx_int8}",
             "torch int8": f"{tiny_models.teacher}?quantize=int8", "torch fp32": str(tiny_models.teacher)}
    return {name: load(open_backend(parse_model_spec(spec))) for name, spec in specs.items()}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.sampled_from([2, 7, 32]), seed=st.integers(0, 2**16))
def test_a_texts_outputs_do_not_depend_on_its_batch_mates(backends, batch_texts, batch_size, seed):
    """At batch size 1 and any other, in any order: identical outputs. Dynamically quantized models run each text
    alone; onnxruntime's float kernels are exact whatever the batch; torch's float kernels round differently by the
    rows they are given (by at most 4e-7 here), which no verdict can turn on."""
    order = np.random.default_rng(seed).permutation(len(batch_texts))
    for name, backend in backends.items():
        alone = backend.run(batch_texts, batch_size=1, max_length=64)
        shuffled = backend.run([batch_texts[i] for i in order], batch_size=batch_size, max_length=64)
        for field in ("logits", "cls", "mean"):
            expected, got = getattr(alone, field), getattr(shuffled, field)[np.argsort(order)]
            if name == "torch fp32":
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=f"{name} {field}")
            else:
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} {field}")
    assert backends["onnx int8"].runs_alone() and backends["torch int8"].runs_alone()
    assert not backends["onnx fp32"].runs_alone() and not backends["torch fp32"].runs_alone()


def test_compare_gives_the_same_kl_and_top1_at_every_batch_size(tiny_models, tmp_path):
    figures = {}
    for size in ("1", "32"):
        result = compare("--reference", f"onnx:{tiny_models.onnx}", "--candidate", f"onnx:{tiny_models.onnx_int8}",
                         "--candidate", f"{tiny_models.teacher}?quantize=int8", "--eval", str(tiny_models.eval_csv),
                         "--checks", "kl_divergence,top1_agreement", "--batch-size", size, "--cache-dir", "cache",
                         "--report", f"r{size}.json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / f"r{size}.json").read_text())
        figures[size] = {(r["metric"], r["candidate"]): r["value"] for r in report["results"]}
        assert report["models"]["onnx-int8/model.onnx"]["batching"].startswith("one text at a time")
        assert report["models"]["onnx/model.onnx"]["batching"] == f"batches of {size}"
    assert figures["1"] == figures["32"] and len(figures["1"]) == 4
    # The int8 candidates' outputs were keyed by how they ran, not the batch size: the second run read them.
    assert "model outputs: 1 computed" in result.stdout and "2 from cache" in result.stdout


# -- 8. multiple choice as lm-evaluation-harness reads it ------------------------------------------------------------


def lm_eval_loglikelihood(model_dir: Path, context: list[int], continuation: list[int], max_length: int) -> float:
    """lm-evaluation-harness's HFLM._loglikelihood_tokens, transcribed for one request: the model reads
    ``(context + continuation)[-(max_length + 1):][:-1]`` and the continuation is scored on its last positions."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    inp = (context + continuation)[-(max_length + 1):][:-1]
    with torch.inference_mode():
        logits = torch.log_softmax(model(input_ids=torch.tensor([inp])).logits.double(), dim=-1)[0]
    contlen = len(continuation)
    scored = logits[len(inp) - contlen:]
    return float(scored.gather(1, torch.tensor(continuation)[:, None]).sum())


def test_multiple_choice_keeps_lm_evals_window_plus_one(tiny_lms, tmp_path):
    from transformers import AutoTokenizer

    from miniature import Session, Settings

    rows = [("A long review that runs well past the window of the model, " * 4 + "Sentiment:", [" negative", " positive"]),
            ("Short one. Sentiment:", [" negative", " positive"])]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"context": c, "choices": ch, "label": 0}) + "\n" for c, ch in rows))
    window = 32  # the tiny GPT-2's context
    session = Session(Settings(cache_dir=None, task="causal-lm", max_length=window))
    data = session.dataset(str(path))
    scores = session.model(str(tiny_lms.gpt2)).outputs(data).choice_scores
    tokenizer = AutoTokenizer.from_pretrained(tiny_lms.gpt2)
    for i, (context, choices) in enumerate(rows):
        context_ids = tokenizer(context)["input_ids"]
        for c, choice in enumerate(choices):
            whole = tokenizer(context + choice)["input_ids"]
            expected = lm_eval_loglikelihood(tiny_lms.gpt2, context_ids, whole[len(context_ids):], window)
            assert scores[i, c] == pytest.approx(expected, rel=1e-6, abs=1e-6), (i, c)
    assert len(tokenizer(rows[0][0])["input_ids"]) > window  # the first row is cut, where the rule matters


# -- 9. a model that is not what the task reads is named as such -----------------------------------------------------


def test_a_classifier_in_a_causal_lm_run_is_named_not_a_causal_lm(tiny_models, tiny_lms, tmp_path):
    result = compare("--task", "causal-lm", "--reference", str(tiny_lms.gpt2), "--candidate", str(tiny_models.teacher),
                     "--eval", str(tiny_lms.texts), "--no-cache", "--checks", "kl_divergence", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Model 'teacher' is not a causal language model (architectures: BertForSequenceClassification)" in \
        result.stderr and "tokenizer" not in result.stderr
