"""Causal LMs (#16): token-level KL, top-1 agreement and perplexity against brute force, sliding windows,
multiple-choice scoring against a direct sum, and the gates end to end on tiny GPT-2 and Llama models."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CHOICES
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax, rel_entr

from miniature.tasks.token_windows import windows


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Matrices 32 wide gain nothing from a second thread, and on a busy 2-core machine two threads that wait
    on each other made building these models 20 times slower (126 s against 6 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def runner(**settings):
    from miniature import Session, Settings

    return Session(Settings(cache_dir=None, task="causal-lm", **settings))


@functools.cache
def transformers_model(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def brute_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    """Full (positions x vocabulary) logits of one unpadded sequence, straight from transformers."""
    import torch

    with torch.inference_mode():
        return transformers_model(model_dir)(input_ids=torch.tensor([ids])).logits[0].double().numpy()


def tokens(model_dir: Path, texts: list[str], max_length: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(texts, truncation=True, max_length=max_length)["input_ids"]


@given(st.integers(1, 300), st.integers(2, 64), st.data())
def test_sliding_windows_predict_each_position_once_within_the_window(length, window, data):
    overlap = data.draw(st.integers(1, window - 1))
    spans = windows(length, window, overlap)
    predicted = [p for _, end, first in spans for p in range(first, end)]
    assert predicted == list(range(1, length))  # each position once, in order
    for k, (start, end, first) in enumerate(spans):
        assert 0 <= start < first <= end or (length == 1 and first == end)
        assert end - start <= window and (k == 0 or first - start == overlap)  # context: the overlap at least


def test_the_window_docstring_example_holds():
    import doctest

    from miniature.tasks import token_windows

    assert doctest.testmod(token_windows).failed == 0


def test_kl_top1_and_perplexity_match_brute_force_over_the_full_vocabulary(tiny_lms):
    from miniature import kl_divergence, top1_agreement

    run = runner(max_length=32)
    data = run.dataset(str(tiny_lms.texts))
    reference, candidate = run.model(str(tiny_lms.gpt2)), run.model(str(tiny_lms.gpt2_dropped))
    kl, top1 = kl_divergence(reference, candidate, data), top1_agreement(reference, candidate, data)
    every_kl, same, ref_lp, cand_lp = [], [], [], []
    for ids in tokens(tiny_lms.gpt2, list(data.texts), 32):
        p_logits, q_logits = brute_logits(tiny_lms.gpt2, ids)[:-1], brute_logits(tiny_lms.gpt2_dropped, ids)[:-1]
        log_p, log_q = log_softmax(p_logits, axis=1), log_softmax(q_logits, axis=1)
        every_kl.extend(rel_entr(np.exp(log_p), np.exp(log_q)).sum(axis=1))
        same.extend(p_logits.argmax(1) == q_logits.argmax(1))
        ref_lp.extend(log_p[np.arange(len(ids) - 1), ids[1:]])
        cand_lp.extend(log_q[np.arange(len(ids) - 1), ids[1:]])
    assert kl.tokens == len(every_kl) and kl.task == "causal-lm" and kl.n == len(data)
    assert float(kl) == pytest.approx(np.mean(every_kl), rel=1e-4)
    assert kl.median == pytest.approx(np.median(every_kl), rel=1e-3) and kl.maximum == pytest.approx(max(every_kl), rel=1e-3)
    assert kl.p99 == pytest.approx(np.percentile(every_kl, 99), rel=1e-3)
    assert float(top1) == pytest.approx(np.mean(same), abs=2 / len(same))  # a near-tie may flip on padding noise
    assert kl.perplexity_reference == pytest.approx(np.exp(-np.mean(ref_lp)), rel=1e-5)
    assert kl.perplexity_candidate == pytest.approx(np.exp(-np.mean(cand_lp)), rel=1e-5)
    assert kl.perplexity_ratio == pytest.approx(kl.perplexity_candidate / kl.perplexity_reference)
    assert kl.rms_delta_p == pytest.approx(np.sqrt(np.mean((np.exp(cand_lp) - np.exp(ref_lp)) ** 2)), rel=1e-3)
    assert kl.interval[0] <= float(kl) <= kl.interval[1]
    # Identical models: nothing moves.
    same_model = kl_divergence(reference, reference, data)
    assert float(same_model) == 0.0 and same_model.top1_agreement == 1.0 and same_model.perplexity_ratio == 1.0


def test_long_texts_are_read_in_sliding_windows_each_token_once(tiny_lms):
    """transformers' perplexity guide, written out: windows of the model's 32 positions moving 16 tokens."""
    import torch

    run = runner(max_length=96)
    data = run.dataset(str(tiny_lms.long))
    outputs = run.model(str(tiny_lms.gpt2)).outputs(data)
    model = transformers_model(tiny_lms.gpt2)
    for row, ids in enumerate(tokens(tiny_lms.gpt2, list(data.texts), 96)):
        assert len(ids) == 96 and outputs.token_counts[row] == 95  # truncated at max_length, each token once
        expected, previous_end = [], 0
        for begin in range(0, len(ids), 16):
            end = min(begin + 32, len(ids))
            with torch.inference_mode():
                log_p = torch.log_softmax(model(input_ids=torch.tensor([ids[begin:end]])).logits[0].double(), -1)
            for position in range(max(previous_end, 1), end):
                expected.append(float(log_p[position - 1 - begin, ids[position]]))
            previous_end = end
            if end == len(ids):
                break
        assert outputs.token_logprobs[row, :95] == pytest.approx(expected, abs=1e-5)


def test_pair_statistics_over_sliding_windows_match_the_guides_loop_for_both_models(tiny_lms):
    """KL, top-1 and perplexities of a pair on texts read in several windows: each position once, each model's
    distribution with the context its window gives it (the guide's loop, run on both models)."""
    import torch

    from miniature import kl_divergence

    run = runner(max_length=96)
    data = run.dataset(str(tiny_lms.long))
    kl = kl_divergence(run.model(str(tiny_lms.gpt2)), run.model(str(tiny_lms.gpt2_dropped)), data)
    every_kl, same, ref_lp = [], [], []
    for ids in tokens(tiny_lms.gpt2, list(data.texts), 96):
        previous_end = 0
        for begin in range(0, len(ids), 16):
            end = min(begin + 32, len(ids))
            with torch.inference_mode():
                window = torch.tensor([ids[begin:end]])
                log_p = torch.log_softmax(transformers_model(tiny_lms.gpt2)(input_ids=window).logits[0].double(), -1)
                log_q = torch.log_softmax(transformers_model(tiny_lms.gpt2_dropped)(input_ids=window).logits[0].double(), -1)
            for position in range(max(previous_end, 1), end):
                row = position - 1 - begin
                every_kl.append(float((log_p[row].exp() * (log_p[row] - log_q[row])).sum()))
                same.append(bool(log_p[row].argmax() == log_q[row].argmax()))
                ref_lp.append(float(log_p[row, ids[position]]))
            previous_end = end
            if end == len(ids):
                break
    assert kl.tokens == len(every_kl) == 95 * len(data)
    assert float(kl) == pytest.approx(np.mean(every_kl), rel=1e-4)
    assert kl.maximum == pytest.approx(max(every_kl), rel=1e-3)
    assert kl.top1_agreement == pytest.approx(np.mean(same), abs=2 / len(same))
    assert kl.perplexity_reference == pytest.approx(np.exp(-np.mean(ref_lp)), rel=1e-5)


def test_a_doc_stride_that_leaves_windows_nothing_to_predict_is_a_usage_error(tiny_lms):
    from miniature.errors import UsageError

    run = runner(max_length=96, doc_stride=40)  # the tiny models' context is 32 tokens
    with pytest.raises(UsageError, match=r"doc_stride \(40\) must be below the causal-LM window \(32 tokens"):
        run.model(str(tiny_lms.gpt2)).outputs(run.dataset(str(tiny_lms.long)))


def test_arc_style_rows_with_a_question_column_are_multiple_choice_not_qa(tmp_path):
    run = runner()
    path = tmp_path / "arc.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["question", "choices", "label"],
                                      ["Which is a mammal?", json.dumps([" a whale", " a shark"]), 0]])
    data = run.dataset(str(path))
    assert not data.is_qa and list(data.texts) == ["Which is a mammal?"]
    assert list(data.choices[0]) == [" a whale", " a shark"] and list(data.labels) == [0]


def test_multiple_choice_scores_are_the_summed_token_log_probabilities(tiny_lms):
    from miniature import error_jaccard

    run = runner(max_length=64)
    data = run.dataset(str(tiny_lms.choices))
    assert data.is_multiple_choice and data.choices[0] == tuple(CHOICES) and data.labels[0] in (0, 1)
    llama = run.model(str(tiny_lms.llama))
    scores = llama.outputs(data).choice_scores
    for row in range(5):
        for c, choice in enumerate(CHOICES):
            context, whole = tokens(tiny_lms.llama, [data.texts[row], data.texts[row] + choice], 64)
            log_p = log_softmax(brute_logits(tiny_lms.llama, whole), axis=1)
            direct = sum(log_p[t - 1, whole[t]] for t in range(len(context), len(whole)))
            assert scores[row, c] == pytest.approx(direct, rel=1e-5)
    result = error_jaccard(llama, run.model(str(tiny_lms.llama_int8)), data)
    wrong = np.flatnonzero(scores.argmax(1) != np.array(data.labels))
    assert result.errors_reference == len(wrong) and result.n == 40


def test_embeddings_are_the_last_hidden_state_mean_pooled_or_its_last_token(tiny_lms):
    import torch

    from miniature import knn_agreement

    run = runner(max_length=32)
    assert run.settings.pooling == "mean"  # a decoder's first token embeds nothing: mean is the default
    data = run.dataset(str(tiny_lms.texts))
    outputs = run.model(str(tiny_lms.llama)).outputs(data)
    ids = tokens(tiny_lms.llama, [data.texts[0]], 32)[0]
    with torch.inference_mode():
        hidden = transformers_model(tiny_lms.llama)(
            input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].numpy()
    assert outputs.embeddings("mean")[0] == pytest.approx(hidden.mean(0), abs=1e-5)
    assert outputs.embeddings("last")[0] == pytest.approx(hidden[-1], abs=1e-5)
    result = knn_agreement(run.model(str(tiny_lms.llama)), run.model(str(tiny_lms.llama_int8)), data, k=5)
    assert 0.0 <= float(result) <= 1.0 and result.pooling == "mean"


def test_models_without_a_shared_vocabulary_or_an_attack_do_not_apply(tiny_lms):
    from miniature import NotApplicable, kl_divergence
    from miniature.characteristics.adversarial import AdversarialVulnerability

    run = runner(max_length=32)
    data = run.dataset(str(tiny_lms.texts))
    gpt2, llama = run.model(str(tiny_lms.gpt2)), run.model(str(tiny_lms.llama))
    with pytest.raises(NotApplicable, match="do not share a tokenizer"):
        kl_divergence(gpt2, llama, data)
    with pytest.raises(NotApplicable, match="a causal LM predicts next tokens"):
        AdversarialVulnerability().run("attack_robustness", gpt2, gpt2, {"attack_set": data})


def test_bad_multiple_choice_rows_name_the_row_and_what_was_expected(tmp_path):
    from miniature import DatasetError

    run = runner()
    path = tmp_path / "bad.csv"
    path.write_text('context,choices,label\n"a film",only one,0\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 0 has \['only one'\] in its choices column 'choices'; expected at least two"):
        run.dataset(str(path))
    path.write_text('context,choices,label\n"a film",bad|good,2\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"row 0 has label 2 in column 'label', which names none of its 2 choices"):
        run.dataset(str(path))


def test_the_causal_lm_gates_run_end_to_end_through_pytest(pytester, tiny_lms):
    from miniature import kl_divergence

    run = runner(max_length=32)
    data = run.dataset(str(tiny_lms.choices))
    reference = run.model(str(tiny_lms.gpt2))
    dropped, int8 = (float(kl_divergence(reference, run.model(m), data))
                     for m in (str(tiny_lms.gpt2_dropped), f"onnx:{tiny_lms.gpt2_int8}"))
    assert int8 < dropped  # int8 keeps the distributions far closer than dropping a layer
    pytester.makepyprojecttoml(f"""
[tool.miniature]
task = "causal-lm"
reference = "gpt2"
candidates = ["dropped", "int8"]
eval = "{tiny_lms.choices}"
max_length = 32
cache_dir = ""

[tool.miniature.models]
gpt2 = "{tiny_lms.gpt2}"
dropped = "{tiny_lms.gpt2_dropped}"
int8 = "onnx:{tiny_lms.gpt2_int8}"

[tool.miniature.thresholds]
kl_divergence = {(int8 + dropped) / 2:.6g}
top1_agreement = 0.0
error_jaccard = 0.0
knn_agreement = {{ min = 0.0, k = 5 }}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "pyproject.toml", "-v", "--miniature-report", "r.json")
    result.assert_outcomes(passed=7, failed=1)
    result.stdout.fnmatch_lines(["*kl_divergence?dropped? FAILED*", "*kl_divergence?int8? PASSED*"])
    result.stdout.fnmatch_lines(["*kl_divergence on causal LMs: over the * predicted tokens of *, token-weighted; "
                                 "perplexity gpt2 *, dropped * (ratio *)*"])
    report = json.loads((pytester.path / "r.json").read_text())
    kl = next(r for r in report["results"] if r["metric"] == "kl_divergence" and r["candidate"] == "dropped")
    assert kl["value"] == pytest.approx(dropped) and kl["task"] == "causal-lm" and kl["tokens"] > kl["n"]
    assert {"perplexity_reference", "perplexity_candidate", "perplexity_ratio"} <= set(kl)


def test_a_model_computing_nan_is_a_model_error_not_a_figure(tiny_lms, tmp_path):
    import torch

    from miniature import ModelLoadError, kl_divergence

    broken = transformers_model(tiny_lms.gpt2).__class__.from_pretrained(tiny_lms.gpt2)
    with torch.no_grad():
        broken.lm_head.weight[5] = float("nan")  # token 5's logit is NaN at every position
    broken.save_pretrained(tmp_path / "broken")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "broken" / name).write_bytes((tiny_lms.gpt2 / name).read_bytes())
    run = runner(max_length=32)
    data = run.dataset(str(tiny_lms.texts))
    with pytest.raises(ModelLoadError, match=r"Model 'broken' computed non-finite logits .* on text '\d+' of"):
        kl_divergence(run.model(str(tiny_lms.gpt2)), run.model(str(tmp_path / "broken")), data)
    with pytest.raises(ModelLoadError, match="computed non-finite logits"):
        run.model(str(tmp_path / "broken")).outputs(data)


def test_the_pair_statistics_come_from_the_disk_cache_on_a_second_run(tiny_lms, tmp_path):
    from miniature import Session, Settings, kl_divergence
    from miniature.models.base import forward_counter

    figures = []
    for _ in range(2):
        run = Session(Settings(cache_dir=tmp_path / "cache", task="causal-lm", max_length=32))
        data = run.dataset(str(tiny_lms.texts))
        before = forward_counter.batches
        kl = kl_divergence(run.model(str(tiny_lms.gpt2)), run.model(f"onnx:{tiny_lms.gpt2_int8}"), data)
        figures.append((float(kl), kl.top1_agreement, kl.perplexity_ratio, forward_counter.batches - before))
    assert figures[0][3] > 0 and figures[1][3] == 0  # the second run ran no model
    assert figures[0][:3] == figures[1][:3]
    # ... and loaded none: the vocabulary check and the cache key need no weights
    assert not any(run.engine.backend(run.model(m)).loaded for m in (str(tiny_lms.gpt2), f"onnx:{tiny_lms.gpt2_int8}"))


def test_the_fp32_onnx_export_computes_what_transformers_does_on_padded_batches(tiny_lms):
    """The export swaps transformers' vmap-built attention mask for a traceable one: on right-padded batches of
    texts of every length, its next-token distributions must be transformers' own."""
    from miniature import Session, Settings, kl_divergence

    exported = tiny_lms.gpt2_int8.parent.parent / "gpt2-onnx" / "model.onnx"
    run = Session(Settings(cache_dir=None, task="causal-lm", max_length=32, batch_size=8))
    kl = kl_divergence(run.model(str(tiny_lms.gpt2)), run.model(f"onnx:{exported}"), run.dataset(str(tiny_lms.texts)))
    assert float(kl) < 1e-6 and kl.maximum < 1e-5
    assert kl.top1_agreement > 0.999 and abs(kl.perplexity_ratio - 1) < 1e-4


def test_outside_a_causal_lm_run_a_language_model_is_read_as_an_encoder(tiny_lms):
    from miniature import Session, Settings

    run = Session(Settings(cache_dir=None, max_length=32))  # task = "text-classification"
    outputs = run.model(str(tiny_lms.gpt2)).outputs(run.dataset(str(tiny_lms.texts)))
    assert outputs.logits is None and outputs.token_counts is None and outputs.cls.shape == (40, 32)


def test_compare_runs_what_applies_and_says_why_the_rest_does_not(tiny_lms, tmp_path):
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "miniature.cli", "compare", "--task", "causal-lm", "--reference", str(tiny_lms.gpt2),
         "--candidate", str(tiny_lms.gpt2_dropped), "--eval", str(tiny_lms.texts), "--max-length", "32", "--no-cache",
         "--report", "r.json"], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    status = {r["metric"]: r["status"] for r in report["results"]}
    assert status == {"kl_divergence": "ok", "top1_agreement": "ok", "knn_agreement": "ok", "generation_agreement": "ok",
                      "error_jaccard": "not_applicable"}
    assert "has no choices, which the prediction-error check needs on a causal LM" in result.stdout


def test_the_torch_statistics_equal_float64_numpy_on_the_same_logits(tiny_lms):
    """The pair's statistics are computed in torch, multi-threaded (issue #25): on the very logits the pass reads,
    they equal numpy's float64 log-softmax and KL to within 1e-9 relative (the old, single-threaded path)."""
    from miniature import maths, tasks
    from miniature.tasks.token_windows import (
        overlap_of,
        predicted_rows,
        segments,
        stream,
        tokenize,
        window_size,
        windows_per_batch,
    )

    run = runner(max_length=200, logits_memory=1)  # 32-token windows over 200 tokens; 1 MB: 16 windows a batch
    data = run.dataset(str(tiny_lms.long))
    backends = [run.engine.loaded_backend(run.model(m)) for m in (str(tiny_lms.gpt2), str(tiny_lms.gpt2_dropped))]
    stats = tasks.get("causal-lm").run_pair(backends, ["gpt2", "dropped"], data, run.settings)
    ids = tokenize(backends[0], data.texts, 200)
    window = window_size(backends, 200)
    per_batch = windows_per_batch(backends, window, 1)
    assert 1 < per_batch < len(segments(ids, window, overlap_of(window, None)))
    kl, same = [], []
    for piece, (p, q), _ in stream(backends, ids, segments(ids, window, overlap_of(window, None)), batch_size=per_batch,
                                   need_hidden=False, model_names=["gpt2", "dropped"]):
        log_p, log_q = maths.log_softmax(predicted_rows(piece, p)), maths.log_softmax(predicted_rows(piece, q))
        kl.append((piece, maths.kl_from_log_probabilities(log_p, log_q)))
        same.append((piece, log_p.argmax(-1) == log_q.argmax(-1)))
    order = np.argsort([p.text * 10**6 + p.first for p, _ in kl], kind="stable")  # text after text, as the pass keeps them
    expected_kl = np.concatenate([kl[i][1] for i in order])
    np.testing.assert_allclose(stats.kl, expected_kl, rtol=1e-9, atol=1e-15)
    assert (stats.same_top == np.concatenate([same[i][1] for i in order])).all()
