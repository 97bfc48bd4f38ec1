"""Characteristic 4: BERT-Attack through TextAttack, offline, on tiny in-process models."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import faiss  # noqa: F401  (see test_plugin: imported once by the outer process)
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniature.attack.offline import import_textattack
from miniature.characteristics.adversarial import AttackOutcome, compare_attacks, percent_drop, summarize_attack

# Imported here, once: pytester's in-process runs unload modules first imported inside them.
import_textattack()

EXAMPLES = 8


# -- the pure figures, against brute force -------------------------------------------------------

outcomes_strategy = st.lists(st.sampled_from(["successful", "failed", "skipped"]), min_size=1, max_size=40)


def outcomes(statuses: list[str], *, words: int = 10) -> list[AttackOutcome]:
    return [AttackOutcome(id=str(i), status=s, perturbed_text=f"text {i}", queries=5 + i, words=words,
                          words_changed=2 if s == "successful" else 0) for i, s in enumerate(statuses)]


@given(outcomes_strategy)
def test_table3_row_counts_add_up_and_accuracy_cannot_rise(statuses):
    summary = summarize_attack("m", outcomes(statuses))
    assert summary.successful + summary.failed + summary.skipped == summary.n == len(statuses)
    assert 0.0 <= summary.attacked_accuracy <= summary.original_accuracy <= 1.0
    correct_before = sum(s != "skipped" for s in statuses)
    assert summary.original_accuracy == pytest.approx(correct_before / len(statuses))
    assert summary.attacked_accuracy == pytest.approx(statuses.count("failed") / len(statuses))
    if correct_before:
        brute = 100 * (correct_before - statuses.count("failed")) / correct_before
        assert summary.percent_change == pytest.approx(brute)
        assert summary.success_rate == pytest.approx(statuses.count("successful") / correct_before)
    else:
        assert np.isnan(summary.percent_change) and np.isnan(summary.success_rate)


@given(outcomes_strategy)
def test_a_model_against_itself_has_no_gap_and_full_success_agreement(statuses):
    result = compare_attacks([str(i) for i in range(len(statuses))], outcomes(statuses), outcomes(statuses), resamples=50)
    assert float(result) == 0.0 or np.isnan(float(result))
    assert result.success_jaccard == 1.0
    assert result.candidate_only_ids == []


@given(outcomes_strategy, outcomes_strategy)
def test_the_gap_is_antisymmetric_and_the_success_jaccard_symmetric(a, b):
    n = min(len(a), len(b))
    a, b, ids = outcomes(a[:n]), outcomes(b[:n]), [str(i) for i in range(n)]
    ab, ba = compare_attacks(ids, a, b, resamples=0), compare_attacks(ids, b, a, resamples=0)
    if not np.isnan(float(ab)):
        assert float(ab) == pytest.approx(-float(ba))
    assert ab.success_jaccard == ba.success_jaccard
    assert 0.0 <= ab.success_jaccard <= 1.0


def test_percent_drop_matches_table_3_of_the_paper():
    # BERT-large in the paper: 0.943944 before, 0.5635 after, 40.30366 % change.
    assert percent_drop(0.943944, 0.5635) == pytest.approx(40.30366, abs=1e-4)
    assert np.isnan(percent_drop(0.0, 0.0))


def test_outcomes_for_other_examples_are_refused():
    a, b = outcomes(["failed", "skipped"]), outcomes(["failed"])
    with pytest.raises(ValueError, match="same examples"):
        compare_attacks(["0", "1"], a, b)
    with pytest.raises(ValueError, match="attack status"):
        AttackOutcome(id="0", status="maximized", perturbed_text="", queries=0, words=1, words_changed=0)


# -- offline import and the missing extra --------------------------------------------------------


def run_python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    import os

    environment = {**os.environ, "HOME": str(tmp_path), "TA_CACHE_DIR": str(tmp_path / "ta"), **env}
    environment.pop("NLTK_DATA", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_textattack_imports_offline_without_trying_to_download(tmp_path):
    done = run_python("""
        import nltk
        def refuse(*args, **kwargs):
            raise SystemExit(f"nltk.download{args} attempted")
        nltk.download = refuse
        from miniature.attack.offline import import_textattack
        import_textattack()
        from textattack.constraints.pre_transformation import StopwordModification
        print("stopwords", len(StopwordModification().stopwords))
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopwords 179" in done.stdout
    assert (tmp_path / "ta" / "post_install_check_3").exists()


def test_without_textattack_the_check_names_the_extra(tmp_path, tiny_models):
    done = run_python(f"""
        import sys
        sys.modules["textattack"] = None  # as if the extra were not installed
        from miniature import Session, Settings, attack_robustness
        from miniature.errors import MissingExtraError
        runner = Session(Settings(cache_dir=None))
        model = runner.model({str(tiny_models.teacher)!r})
        try:
            attack_robustness(model, model, runner.dataset({str(tiny_models.eval_csv)!r}))
        except MissingExtraError as exc:
            print("ERROR:", exc)
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pip install 'pytest-miniature[attack]'" in done.stdout
    assert "TextAttack 0.3.11" in done.stdout


# -- real attacks on tiny models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def attack_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("attack-cache")


def make_runner(tiny_models, tiny_masked_lm, cache_dir, **attack):
    from miniature import Session, Settings

    settings = Settings(cache_dir=cache_dir, attack={"model": str(tiny_masked_lm), "examples": EXAMPLES, **attack})
    return Session(settings)


@pytest.fixture(scope="module")
def attacked(tiny_models, tiny_masked_lm, attack_cache):
    """teacher vs student, attacked once for the module (the cache serves the re-run test)."""
    from miniature import attack_robustness

    runner = make_runner(tiny_models, tiny_masked_lm, attack_cache)
    data = runner.dataset(str(tiny_models.eval_csv))
    result = attack_robustness(runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student)), data)
    return runner, result


def test_the_attack_report_is_consistent(attacked):
    runner, result = attacked
    assert runner.stats.attacked == 2 * EXAMPLES
    for summary in (result.reference_summary, result.candidate_summary):
        assert summary.n == EXAMPLES
        assert summary.successful + summary.failed + summary.skipped == EXAMPLES
        assert summary.attacked_accuracy <= summary.original_accuracy
        assert summary.absolute_change == pytest.approx(summary.original_accuracy - summary.attacked_accuracy)
        assert summary.average_queries > 0
    assert result.reference_summary.successful > 0  # the tiny masked LM finds adversarial examples
    assert float(result) == pytest.approx(result.candidate_summary.percent_change - result.reference_summary.percent_change)
    assert result.attack["max_candidates"] == 8 and result.attack["textattack"] == "0.3.11"
    assert 0 <= result.transferred <= result.transfer_tried <= result.reference_summary.successful


def test_adversarial_examples_respect_the_constraints_and_fool_the_model(attacked, tiny_models):
    from miniature.attack.runs import attack_outcomes
    from miniature.tasks import classification

    runner, result = attacked
    teacher = runner.model(str(tiny_models.teacher))
    data = runner.dataset(str(tiny_models.eval_csv))
    found = attack_outcomes(runner.engine, teacher, data, runner.settings.attack)
    gold = classification.TextClassification().gold(runner.engine, teacher, data, "test")
    wins = [(o, i) for i, o in enumerate(found) if o.status == "successful"]
    assert wins
    backend = runner.engine.loaded_backend(teacher)
    predictions = backend.run([o.perturbed_text for o, _ in wins], batch_size=32, max_length=256).predictions
    for (outcome, index), prediction in zip(wins, predictions):
        assert outcome.perturbed_text != data.texts[index]
        assert 1 <= outcome.words_changed <= math.ceil(0.4 * outcome.words)  # MaxWordsPerturbed rounds up
        assert prediction != gold[index]  # the adversarial text really changes the model's answer


def test_an_unchanged_rerun_attacks_nothing(attacked, tiny_models, tiny_masked_lm, attack_cache):
    from miniature import attack_robustness

    _, first = attacked
    runner = make_runner(tiny_models, tiny_masked_lm, attack_cache)
    data = runner.dataset(str(tiny_models.eval_csv))
    again = attack_robustness(runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student)), data)
    assert runner.stats.attacked == 0 and runner.stats.attacks_from_cache == 2 * EXAMPLES
    assert float(again) == float(first) and again.candidate_summary == first.candidate_summary


def test_naming_the_same_models_differently_attacks_nothing(attacked, tiny_models, tiny_masked_lm, attack_cache, tmp_path):
    import shutil

    from miniature import Session, Settings, attack_robustness

    lm_copy = shutil.copytree(tiny_masked_lm, tmp_path / "renamed-mlm")  # same files, another path
    runner = Session(Settings(cache_dir=attack_cache, models={"t": str(tiny_models.teacher), "s": str(tiny_models.student)},
                             attack={"model": str(lm_copy), "examples": EXAMPLES}))
    attack_robustness(runner.model("t"), runner.model("s"), runner.dataset(str(tiny_models.eval_csv)))
    assert runner.stats.attacked == 0 and runner.stats.attacks_from_cache == 2 * EXAMPLES


def test_a_changed_setting_attacks_again(tiny_models, tiny_masked_lm, attack_cache):
    from miniature import attack_robustness

    runner = make_runner(tiny_models, tiny_masked_lm, attack_cache, max_candidates=2, examples=3)
    teacher = runner.model(str(tiny_models.teacher))
    result = attack_robustness(teacher, teacher, runner.dataset(str(tiny_models.eval_csv)))
    assert runner.stats.attacked == 3  # the same model twice is attacked once
    assert result.attack["max_candidates"] == 2 and float(result) == 0.0 or np.isnan(float(result))


def test_a_corrupted_attack_cache_entry_is_set_aside_and_recomputed(tiny_models, tiny_masked_lm, tmp_path):
    from miniature import attack_robustness
    from miniature.errors import CacheWarning

    def attack():
        runner = make_runner(tiny_models, tiny_masked_lm, tmp_path, examples=2)
        teacher = runner.model(str(tiny_models.teacher))
        return runner, attack_robustness(teacher, teacher, runner.dataset(str(tiny_models.eval_csv)))

    _, first = attack()
    [entry] = (tmp_path / "attacks").rglob("*.json")
    entry.write_text("{not json")
    with pytest.warns(CacheWarning, match="unreadable"):
        runner, second = attack()
    assert runner.stats.attacked == 2
    assert entry.with_suffix(".corrupt").exists()
    assert second.reference_summary == first.reference_summary


def test_onnx_candidates_are_attacked_through_the_same_wrapper(tiny_models, tiny_masked_lm, attack_cache):
    from miniature import attack_robustness

    runner = make_runner(tiny_models, tiny_masked_lm, attack_cache)
    data = runner.dataset(str(tiny_models.eval_csv))
    result = attack_robustness(runner.model(str(tiny_models.teacher)), runner.model(f"onnx:{tiny_models.onnx}"), data)
    # fp32 ONNX computes what the torch model computes, so the attack goes the same way.
    assert result.candidate_summary.original_accuracy == result.reference_summary.original_accuracy
    assert result.success_jaccard == 1.0 and float(result) == pytest.approx(0.0)


def test_the_wrapper_gives_the_stock_wrappers_logits(tiny_models):
    import torch
    from textattack.models.wrappers import HuggingFaceModelWrapper
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from miniature import Session, Settings
    from miniature.attack.wrapper import BackendModelWrapper

    texts = list(Session(Settings(cache_dir=None)).dataset(str(tiny_models.eval_csv)).texts[:20])
    runner = Session(Settings(cache_dir=None))
    ours = BackendModelWrapper(runner.engine.loaded_backend(runner.model(str(tiny_models.teacher))), batch_size=8, max_length=128)
    # The stock wrapper pads to the tokenizer's model_max_length (512 here) whatever the model's
    # position table holds (128 for the tiny model), so it is told the model's real limit.
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.teacher, model_max_length=128)
    stock = HuggingFaceModelWrapper(AutoModelForSequenceClassification.from_pretrained(tiny_models.teacher).eval(), tokenizer)
    with torch.inference_mode():
        expected = stock(texts).numpy()
    np.testing.assert_allclose(ours(texts), expected, atol=1e-4)
    assert ours.queries == 20


def test_a_similarity_constraint_on_a_local_encoder_blocks_every_change_at_threshold_one(tiny_models, tiny_masked_lm, tmp_path):
    from miniature import attack_robustness

    runner = make_runner(tiny_models, tiny_masked_lm, tmp_path, examples=4, similarity_model=str(tiny_models.base_encoder),
                         similarity_threshold=1.0)
    teacher = runner.model(str(tiny_models.teacher))
    result = attack_robustness(teacher, teacher, runner.dataset(str(tiny_models.eval_csv)))
    assert result.reference_summary.successful == 0  # no substitution keeps cosine similarity at 1
    assert result.attack["similarity_model"] == str(tiny_models.base_encoder)


def test_a_model_without_a_masked_lm_head_is_refused(tiny_models, tmp_path):
    from miniature import attack_robustness
    from miniature.errors import ModelLoadError

    runner = make_runner(tiny_models, tiny_models.teacher, tmp_path)  # a classifier, not a masked LM
    teacher = runner.model(str(tiny_models.teacher))
    with pytest.raises(ModelLoadError, match="no trained masked-LM head"):
        attack_robustness(teacher, teacher, runner.dataset(str(tiny_models.eval_csv)))


def test_attack_settings_are_checked():
    from miniature import Settings
    from miniature.errors import UsageError

    with pytest.raises(UsageError, match=r"Unknown key\(s\) candidates in \[tool.miniature.attack\]"):
        Settings(attack={"candidates": 48})
    with pytest.raises(UsageError, match="'max_percent' parameter of \\[tool.miniature.attack\\]"):
        Settings(attack={"max_percent": 1.5})
    with pytest.raises(UsageError, match="attack_robustness in \\[tool.miniature.thresholds\\]"):
        Settings(thresholds={"attack_robustness": {"min": 0.5}})
    assert Settings(thresholds={"attack_robustness": {"max_gap": 5}}).thresholds["attack_robustness"].value == 5.0
    assert Settings(thresholds={"attack_drop_gap": 15}).thresholds["attack_robustness"].value == 15.0
    with pytest.raises(UsageError, match="not both"):
        Settings(thresholds={"attack_drop_gap": 15, "attack_robustness": 10})


def test_attack_results_survive_the_json_report_and_render_again(attacked, tmp_path):
    import json

    from miniature.report.baseline import baseline_lines
    from miniature.report.json_report import build_report, read_json, write_json
    from miniature.report.markdown import markdown_summary
    from miniature.report.terminal import summary

    runner, result = attacked
    path = write_json(build_report(runner), tmp_path / "report.json")
    report = read_json(path)
    [saved] = [r for r in report["results"] if r["metric"] == "attack_robustness"]
    assert saved["value"] == pytest.approx(float(result))
    assert saved["candidate_summary"]["successful"] == result.candidate_summary.successful
    assert saved["attack"]["max_candidates"] == 8 and report["settings"]["attack"]["examples"] == EXAMPLES
    assert report["outputs"]["attacked"] == 2 * EXAMPLES
    assert summary(report["results"]) == summary([result])  # the saved report renders as the live result did
    assert "| target | attack set |" in markdown_summary(report["results"])
    # A gap that is NaN (a model with nothing to lose) is null in JSON and "-" in the baseline table.
    saved["value"] = None
    lines = baseline_lines([saved], json.loads(json.dumps(report)), "old.json")
    assert any("attack_robustness" in line and line.rstrip().endswith("-") for line in lines)


# -- the gate through pytest ---------------------------------------------------------------------


@pytest.fixture
def attack_project(pytester, tiny_models, tiny_masked_lm, attack_cache):
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "teacher"
candidates = ["student"]
attack_set = "{tiny_models.eval_csv}"
cache_dir = "{attack_cache}"

[tool.miniature.models]
teacher = "{tiny_models.teacher}"
student = "{tiny_models.student}"

[tool.miniature.attack]
model = "{tiny_masked_lm}"
examples = {EXAMPLES}
""")
    return pytester


def test_the_attack_gate_passes_and_prints_table_3(attack_project, attacked):
    _, expected = attacked
    attack_project.makepyfile("""
        from miniature import assert_attack_robustness

        def test_attack(reference, candidate, attack_set):
            assert_attack_robustness(reference, candidate, attack_set, max_gap=100)
    """)
    result = attack_project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    ref, cand = expected.reference_summary, expected.candidate_summary
    result.stdout.fnmatch_lines([
        "adversarial vulnerability, BERT-Attack (paper section 6, Table 3):",
        "target*attack set*n*orig. acc*after attack*abs. change*% change*success rate*avg queries*words changed*gap vs ref*",
        f"teacher*eval.csv*{EXAMPLES}*{ref.original_accuracy:.4f}*{ref.attacked_accuracy:.4f}*(reference)*",
        f"student*eval.csv*{EXAMPLES}*{cand.original_accuracy:.4f}*{cand.attacked_accuracy:.4f}*{float(expected):+.2f}*PASS (max gap 100)",
        "BERT-Attack (TextAttack 0.3.11): masked LM *, K=8 candidates/word, max 40% of words, no sentence-similarity*",
        f"attacks: 0 examples attacked*, {2 * EXAMPLES} outcomes from cache",
    ])


def test_the_configured_attack_gate_fails_with_the_gap_and_the_ids(attack_project, attacked):
    _, expected = attacked
    with open(attack_project.path / "pyproject.toml", "a") as handle:
        handle.write("\n[tool.miniature.thresholds]\nattack_robustness = -1000\n")
    result = attack_project.runpytest("-p", "no:cacheprovider", "pyproject.toml")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        f"*student loses {expected.candidate_summary.percent_change:.1f}% of its accuracy to BERT-Attack*",
        "*metric*max gap*gap ?95% CI?*",
        "*attack_robustness*<= -1000*",
        "*FAIL (max gap -1000)*",
    ])
