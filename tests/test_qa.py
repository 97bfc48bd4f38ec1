"""Extractive question answering (SQuAD 2.0): scoring, span decoding, data, models and the plugin."""

from __future__ import annotations

import json

import faiss  # noqa: F401  (see test_plugin: imported once by the outer process)
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniature.errors import DatasetError, ModelLoadError, UsageError
from miniature.models.spans import best_span, decide
from miniature.tasks.squad import exact_match, f1_score, normalize_answer

SLICE = "[:160]"

# -- SQuAD 2.0 scoring, hand-worked from the official script's rules ------------------------------


@pytest.mark.parametrize("text, normalised", [
    ("The Normans", "normans"),  # lower-case; the article goes
    ("  in the 10th  and 11th centuries. ", "in 10th and 11th centuries"),  # punctuation, article, spaces
    ("Denmark, Iceland and Norway", "denmark iceland and norway"),
    ("an apple a day", "apple day"),
    ("theatre", "theatre"),  # "the" only as a whole word
    ("U.S.A.", "usa"),  # punctuation is removed, not turned into spaces
    ("", ""),
])
def test_normalisation_follows_the_official_script(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_by_hand():
    golds = ["10th and 11th centuries", "in the 10th and 11th centuries"]
    assert exact_match("the 10th and 11th centuries", golds)  # normalises to the first gold
    assert not exact_match("10th century", golds)
    # "10th century" vs "10th and 11th centuries": 1 common token; P = 1/2, R = 1/4, F1 = 2PR/(P+R) = 1/3.
    # vs "in 10th and 11th centuries": 1 common; P = 1/2, R = 1/5, F1 = 2/7. The best gold counts.
    assert f1_score("10th century", golds) == pytest.approx(1 / 3)
    assert f1_score("Norway", ["Denmark, Iceland and Norway"]) == pytest.approx(2 * 1 * 0.25 / 1.25)
    # Repeated tokens count with multiplicity: "a b b" vs "b b c": common 2, P = R = 2/3.
    assert f1_score("x y y", ["y y z"]) == pytest.approx(2 / 3)


def test_unanswerable_questions_match_only_no_answer():
    assert exact_match("", []) and f1_score("", []) == 1.0
    assert not exact_match("Normans", []) and f1_score("Normans", []) == 0.0
    assert not exact_match("", ["France"]) and f1_score("", ["France"]) == 0.0
    # Gold answers that normalise to nothing are dropped, as the script does.
    assert exact_match("", ["the", "."])


@given(st.text(max_size=30), st.lists(st.text(max_size=30), max_size=3))
def test_scores_are_bounded_and_exact_match_implies_full_f1(prediction, golds):
    f1 = f1_score(prediction, golds)
    assert 0.0 <= f1 <= 1.0
    if exact_match(prediction, golds):
        assert f1 == 1.0


# -- span decoding, against brute force ------------------------------------------------------------


def brute_force_span(start, end, context, max_answer_length):
    best = (-1, -1, float("-inf"))
    for i in range(len(start)):
        for j in range(i, min(len(start), i + max_answer_length)):
            if context[i] and context[j] and start[i] + end[j] > best[2]:
                best = (i, j, float(start[i] + end[j]))
    return best


@given(st.integers(1, 24).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-5, 5, width=32), min_size=n, max_size=n),
    st.lists(st.floats(-5, 5, width=32), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.integers(1, 6),
)))
def test_best_span_is_the_brute_force_maximum(case):
    start, end, context, max_answer_length = case
    i, j, score = best_span(np.array(start), np.array(end), np.array(context), max_answer_length)
    bi, bj, bscore = brute_force_span(start, end, context, max_answer_length)
    assert score == pytest.approx(bscore) or (score == bscore == float("-inf"))
    if bi >= 0:
        assert context[i] and context[j] and 0 <= j - i < max_answer_length
        assert start[i] + end[j] == pytest.approx(bscore)


def test_no_answer_wins_by_more_than_the_threshold():
    assert decide(span_score=5.0, null_score=4.0, null_threshold=0.0)
    assert not decide(span_score=5.0, null_score=6.0, null_threshold=0.0)
    assert decide(span_score=5.0, null_score=6.0, null_threshold=2.0)  # a higher threshold answers more
    assert not decide(span_score=float("-inf"), null_score=0.0, null_threshold=1e9)  # no span at all


# -- data ------------------------------------------------------------------------------------------


def test_squad_json_loads_one_point_per_question(shared_data):
    from miniature.data import load_eval_set, parse_dataset_spec

    path = shared_data / "squad2_cs224n" / "dev-v2.0.json"
    data = load_eval_set(parse_dataset_spec(f"{path}[:6]"))
    assert data.is_qa and len(data) == 6
    assert data.ids[0] == "68cf05f67fd29c6f129fe2fb9" and data.questions[0] == "In what country is Normandy located?"
    assert data.answers[0] == ("France",) * 4
    assert data.answers[5] == ()  # is_impossible: its plausible answer is not gold
    assert data.texts[0].startswith("The Normans")
    full = load_eval_set(parse_dataset_spec(str(path)))
    assert len(full) == 6078 and sum(not a for a in full.answers) == 3168  # the file's README


def test_mrqa_jsonl_and_flat_squad_v2_rows_load(shared_data, tmp_path):
    from miniature.data import load_eval_set, parse_dataset_spec

    news = load_eval_set(parse_dataset_spec(str(shared_data / "newsqa" / "NewsQA_sample.jsonl")))
    assert len(news) == 17 and news.questions[0] == "What will be nominated?" and news.answers[0] == ("three different videos",)
    rows = tmp_path / "squad_v2.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "question": "Who?", "context": "Rollo did.", "answers": {"text": ["Rollo"], "answer_start": [0]}},
        {"id": "b", "question": "When?", "context": "Never.", "answers": {"text": [], "answer_start": []}},
    ]))
    flat = load_eval_set(parse_dataset_spec(str(rows)))
    assert flat.ids == ("a", "b") and flat.answers == (("Rollo",), ())
    # Questions change what a QA model reads: they enter the fingerprint.
    other = tmp_path / "other.jsonl"
    other.write_text(rows.read_text().replace("Who?", "Whom?"))
    assert load_eval_set(parse_dataset_spec(str(other))).fingerprint != flat.fingerprint


def test_malformed_qa_data_is_reported_with_what_was_expected(tmp_path):
    from miniature.data import load_eval_set, parse_dataset_spec

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [{"question": "Q?", "id": "1"}]}]}]}))
    with pytest.raises(DatasetError, match="looks like SQuAD JSON.*lacks 'context'"):
        load_eval_set(parse_dataset_spec(str(broken)))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "Q?", "context": "C.", "answers": 7}))
    with pytest.raises(DatasetError, match="row 0 has answers 7; expected a list of answer strings"):
        load_eval_set(parse_dataset_spec(str(rows)))
    no_answers = tmp_path / "no_answers.jsonl"
    no_answers.write_text(json.dumps({"question": "Q?", "context": "C."}))
    data = load_eval_set(parse_dataset_spec(str(no_answers)))
    with pytest.raises(DatasetError, match="has no gold answers.*\\?answers=<column>"):
        data.require_answers("the prediction-error check")


# -- models ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_runner(tiny_qa_models):
    from miniature import Session, Settings

    def make(**overrides):
        settings = {"cache_dir": None, "task": "question-answering", "max_length": 128, "doc_stride": 32, **overrides}
        return Session(Settings(**settings))

    return make


def test_windowed_answers_match_a_brute_force_decode_of_every_window(tiny_qa_models, qa_runner):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}[:24]")
    outputs = runner.model(str(tiny_qa_models.reference)).outputs(data)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_qa_models.reference).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qa_models.reference)
    long_contexts = 0
    for q, (question, context) in enumerate(zip(data.questions, data.texts)):
        windows = tokenizer(question, context, truncation="only_second", max_length=128, stride=32,
                            return_overflowing_tokens=True, return_offsets_mapping=True)
        long_contexts += len(windows["input_ids"]) > 1
        best, null = ("", float("-inf")), float("inf")
        for w in range(len(windows["input_ids"])):  # one window at a time, unpadded
            with torch.inference_mode():
                out = model(**{k: torch.tensor([windows[k][w]]) for k in ("input_ids", "attention_mask", "token_type_ids")})
            start, end = out.start_logits[0].numpy(), out.end_logits[0].numpy()
            context_mask = [s == 1 for s in windows.sequence_ids(w)]
            i, j, score = brute_force_span(start, end, context_mask, 30)
            null = min(null, float(start[0] + end[0]))
            if score > best[1]:
                offsets = windows["offset_mapping"][w]
                best = (context[offsets[i][0]:offsets[j][1]], score)
        assert outputs.answers[q] == best[0]
        assert outputs.span_scores[q] == pytest.approx(best[1], abs=1e-4)
        assert outputs.null_scores[q] == pytest.approx(null, abs=1e-4)
    assert long_contexts > 0  # the slice has contexts longer than one window


def test_qa_error_jaccard_is_the_jaccard_of_exact_match_failures(tiny_qa_models, qa_runner):
    from miniature import error_jaccard, jaccard
    from miniature.tasks import question_answering

    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}{SLICE}")
    reference, dropped = runner.model(str(tiny_qa_models.reference)), runner.model(str(tiny_qa_models.dropped))
    result = error_jaccard(reference, dropped, data)
    wrong = {}
    for model in (reference, dropped):
        answers = question_answering.answers(model.outputs(data), runner.settings.null_threshold)
        wrong[model] = {i for i, a, g in zip(data.ids, answers, data.answers) if not exact_match(a, g)}
        assert any(a for a in answers) or model is reference  # the candidate answers some questions
    assert float(result) == pytest.approx(jaccard(wrong[reference], wrong[dropped]))
    assert result.exact_match_reference == pytest.approx(1 - len(wrong[reference]) / len(data))
    assert result.accuracy_candidate == pytest.approx(result.exact_match_candidate)
    assert 0.0 <= result.f1_candidate <= 1.0 and result.task == "question-answering"
    assert result.reference != result.candidate and float(result) < 1.0  # dropping a layer changes the errors


def test_the_null_threshold_decides_without_rerunning_the_model(tiny_qa_models, qa_runner):
    from miniature.models import forward_counter
    from miniature.tasks.question_answering import answers

    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}{SLICE}")
    model = runner.model(str(tiny_qa_models.reference))
    outputs = model.outputs(data)
    before = forward_counter.batches
    always = answers(outputs, null_threshold=1e9)
    never = answers(outputs, null_threshold=-1e9)
    assert all(always) and not any(never)
    assert forward_counter.batches == before


def test_onnx_qa_exports_answer_as_the_torch_model_does(tiny_qa_models, qa_runner):
    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}[:40]")
    torch_out = runner.model(str(tiny_qa_models.reference)).outputs(data)
    onnx_out = runner.model(f"onnx:{tiny_qa_models.onnx}").outputs(data)
    assert list(onnx_out.answers) == list(torch_out.answers)
    np.testing.assert_allclose(onnx_out.span_scores, torch_out.span_scores, atol=1e-3)
    np.testing.assert_allclose(onnx_out.cls, torch_out.cls, atol=1e-3)


def test_a_classifier_on_a_qa_set_is_refused_with_the_fix(tiny_models, tiny_qa_models, qa_runner):
    from miniature import error_jaccard

    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}[:8]")
    classifier = runner.model(str(tiny_models.teacher))
    with pytest.raises(ModelLoadError, match="no question-answering head.*\\?task=question-answering"):
        error_jaccard(runner.model(str(tiny_qa_models.reference)), classifier, data)


def test_qa_settings_are_checked():
    from miniature import Settings

    with pytest.raises(UsageError, match="doc_stride \\(256\\) to be below max_length \\(256\\)"):
        Settings(task="question-answering", doc_stride=256)
    with pytest.raises(UsageError, match=r"'null_threshold' parameter of \[tool.miniature\] must be a finite number"):
        Settings(null_threshold="high")


# -- through pytest --------------------------------------------------------------------------------


def test_the_qa_gates_run_end_to_end_through_pytest(pytester, tiny_qa_models, shared_data, qa_runner):
    from miniature import error_jaccard

    runner = qa_runner()
    data = runner.dataset(f"{tiny_qa_models.eval_json}{SLICE}")
    expected = error_jaccard(runner.model(str(tiny_qa_models.reference)), runner.model(str(tiny_qa_models.dropped)), data)
    pytester.makepyprojecttoml(f"""
[tool.miniature]
task = "question-answering"
reference = "qa"
candidates = ["dropped", "int8"]
eval = "{tiny_qa_models.eval_json}{SLICE}"
train = "{tiny_qa_models.eval_json}[1000:1400]"
ood = "{shared_data / 'newsqa' / 'NewsQA_sample.jsonl'}"
max_length = 128
doc_stride = 32
cache_dir = ""

[tool.miniature.models]
qa = "{tiny_qa_models.reference}"
dropped = "{tiny_qa_models.dropped}"
int8 = "onnx:{tiny_qa_models.onnx_int8}"

[tool.miniature.thresholds]
error_jaccard = {float(expected) + 0.01:.4f}
knn_agreement = {{ min = 0.05, k = 5 }}
ood_agreement = 0.0
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "pyproject.toml", "-v")
    # The dropped-layer model falls just under a threshold set above its error Jaccard; the
    # int8 export keeps every error of its parent.
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*error_jaccard?dropped? FAILED*",
        "*error_jaccard?int8? PASSED*",
    ])
    result.stdout.fnmatch_lines([
        "prediction errors (paper section 3):",
        "reference*candidate*",
        "-*",
        f"qa*dropped*{len(data)}*{float(expected):.4f}*FAIL*",
        "data representation*",
        "data distribution*",
        f"extractive QA (SQuAD 2.0 rules): reference qa EM {expected.exact_match_reference:.4f}, "
        f"F1 {expected.f1_reference:.4f}; dropped EM {expected.exact_match_candidate:.4f}*",
    ])


def test_distilling_a_qa_model_is_refused_not_silently_mistrained(tiny_qa_models, tmp_path):
    from miniature.compress import distill

    with pytest.raises(UsageError, match="not one \\(architectures: BertForQuestionAnswering\\)"):
        distill(tiny_qa_models.reference, tmp_path / "student", ["some text"])
    assert not (tmp_path / "student").exists()


def test_the_compare_cli_gates_qa_models(tiny_qa_models, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "miniature.cli", "compare", "--task", "question-answering",
               "--reference", str(tiny_qa_models.reference), "--candidate", str(tiny_qa_models.dropped),
               "--eval", f"{tiny_qa_models.eval_json}[:60]", "--max-length", "128", "--doc-stride", "32",
               "--cache-dir", str(tmp_path / "cache")]
    passed = subprocess.run([*command, "--threshold", "error_jaccard=0.01"], capture_output=True, text=True, timeout=600)
    assert passed.returncode == 0, passed.stderr[-2000:]
    assert "extractive QA (SQuAD 2.0 rules): reference " in passed.stdout and "all 1 gates passed" in passed.stdout
    failed = subprocess.run([*command, "--threshold", "error_jaccard=1.0"], capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "1 of 1 gates failed" in failed.stdout
    assert "model outputs: 0 computed" in failed.stdout  # the second run reads the first one's cache
