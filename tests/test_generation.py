"""Generation agreement (#24): greedy continuations of causal LMs, against a brute-force greedy loop in transformers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

CLI = [sys.executable, "-m", "miniature.cli"]


def session(**settings):
    from miniature import Session, Settings

    return Session(Settings(cache_dir=None, task="causal-lm", **settings))


def greedy(model_dir: Path, text: str, prompt_tokens: int, new_tokens: int) -> tuple[list[int], list[int]]:
    """(prompt, continuation): the brute-force loop, straight from transformers, one token at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tokenizer(text, truncation=True, max_length=prompt_tokens)["input_ids"]
    sequence = list(prompt)
    with torch.inference_mode():
        for _ in range(new_tokens):
            sequence.append(int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax()))
    return prompt, sequence[len(prompt):]


def test_continuations_are_the_brute_force_greedy_loops_and_the_forced_top1_its_own(tiny_lms):
    from miniature import generation_agreement

    run = session(max_length=32)
    data = run.dataset(f"{tiny_lms.texts}[:12]")
    reference, candidate = run.model(str(tiny_lms.gpt2)), run.model(str(tiny_lms.gpt2_dropped))
    result = generation_agreement(reference, candidate, data, prompt_tokens=8, new_tokens=8)
    found = run.engine.continuations(reference, candidate, data, prompt_tokens=8, new_tokens=8, check="test")
    import torch
    from transformers import AutoModelForCausalLM

    dropped = AutoModelForCausalLM.from_pretrained(tiny_lms.gpt2_dropped).eval()
    for i, text in enumerate(data.texts):
        prompt, expected = greedy(tiny_lms.gpt2, text, 8, 8)
        assert found.reference[i].tolist() == expected
        assert found.candidate[i].tolist() == greedy(tiny_lms.gpt2_dropped, text, 8, 8)[1]
        with torch.inference_mode():
            rows = dropped(input_ids=torch.tensor([prompt + expected[:-1]])).logits[0, len(prompt) - 1:]
        assert found.forced_same[i].tolist() == (rows.argmax(-1) == torch.tensor(expected)).tolist()
    same = (found.reference == found.candidate).all(axis=1)
    assert float(result) == same.mean() < 1.0  # the 1-layer copy writes otherwise
    assert result.identical == same.sum() and result.forced_top1 == found.forced_same.mean()
    assert result.divergent_ids and set(result.divergent_ids) == {data.ids[i] for i in np.flatnonzero(~same)}


def test_a_model_against_a_copy_of_itself_agrees_fully(tiny_lms, tmp_path):
    from miniature import generation_agreement

    copy = tmp_path / "copy"
    shutil.copytree(tiny_lms.gpt2, copy)
    run = session(max_length=32)
    data = run.dataset(f"{tiny_lms.texts}[:10]")
    result = generation_agreement(run.model(str(tiny_lms.gpt2)), run.model(str(copy)), data, prompt_tokens=10,
                                  new_tokens=12)
    assert float(result) == 1.0 and result.first_divergence == 12.0 and result.forced_top1 == 1.0
    assert result.interval == (1.0, 1.0) and result.divergent_ids == []


def test_an_onnx_decoder_generates_as_its_source_does_within_its_int8_drift(tiny_lms):
    """No key/value cache in the export: each step reads the sequence again, as for transformers models."""
    from miniature import generation_agreement

    run = session(max_length=32)
    data = run.dataset(f"{tiny_lms.texts}[:8]")
    exported = tiny_lms.gpt2_int8.parent.parent / "gpt2-onnx" / "model.onnx"
    fp32 = generation_agreement(run.model(str(tiny_lms.gpt2)), run.model(f"onnx:{exported}"), data, prompt_tokens=8,
                                new_tokens=8)
    assert float(fp32) == 1.0  # the fp32 export computes what transformers does
    int8 = generation_agreement(run.model(str(tiny_lms.gpt2)), run.model(f"onnx:{tiny_lms.gpt2_int8}"), data,
                                prompt_tokens=8, new_tokens=8)
    assert 0.0 <= float(int8) <= 1.0 and int8.n == 8


def test_new_tokens_that_leave_no_room_for_a_prompt_are_a_usage_error(tiny_lms):
    from miniature import UsageError, generation_agreement

    run = session(max_length=32)
    data = run.dataset(f"{tiny_lms.texts}[:2]")
    with pytest.raises(UsageError, match=r"new_tokens \(40\) leaves no room for a prompt in the 32-token window"):
        generation_agreement(run.model(str(tiny_lms.gpt2)), run.model(str(tiny_lms.gpt2_dropped)), data, new_tokens=40)


def test_a_classifier_run_neither_runs_nor_offers_generation(tiny_models):
    from miniature import NotApplicable, Session, Settings, generation_agreement

    run = Session(Settings(cache_dir=None, eval=str(tiny_models.eval_csv)))
    assert "generation_agreement" not in run.chosen_checks()[0]  # a classifier generates no text: not run unasked
    data = run.dataset(str(tiny_models.eval_csv))
    with pytest.raises(NotApplicable, match="text classification models generate no text"):
        generation_agreement(run.model(str(tiny_models.teacher)), run.model(str(tiny_models.student)), data)


def test_the_generation_gate_through_the_cli(tiny_lms, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    base = [*CLI, "compare", "--task", "causal-lm", "--reference", str(tiny_lms.gpt2), "--candidate",
            str(tiny_lms.gpt2_dropped), "--eval", f"{tiny_lms.texts}[:10]", "--max-length", "32", "--cache-dir", "cache"]
    strict = subprocess.run([*base, "--threshold", "generation_agreement=1.0", "--report", "r.json", "--html", "r.html"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert strict.returncode == 1, strict.stderr  # the 1-layer copy writes otherwise
    assert "generation agreement, greedy continuations" in strict.stdout
    [result] = json.loads((tmp_path / "r.json").read_text())["results"]
    assert result["metric"] == "generation_agreement" and result["passed"] is False and result["value"] < 1.0
    assert result["computed_by"] == {"engine": "local"} and result["examples"]  # the continuations, side by side
    assert "Where each result was computed" in (tmp_path / "r.html").read_text()
    lenient = subprocess.run([*base, "--threshold", "generation_agreement=0.0"], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=600)
    assert lenient.returncode == 0 and "model outputs: 0 computed" in lenient.stdout, lenient.stderr


@given(st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=12), st.data())
def test_continuation_figures_against_brute_force(reference, data):
    from miniature import compare_continuations

    candidate = data.draw(st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=len(reference),
                                   max_size=len(reference)))
    forced = data.draw(st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=len(reference),
                                max_size=len(reference)))
    ids = [f"p{i}" for i in range(len(reference))]
    result = compare_continuations(ids, np.array(reference), np.array(candidate), np.array(forced), prompt_tokens=8,
                                   resamples=0)
    parted = [next((t for t in range(4) if r[t] != c[t]), 4) for r, c in zip(reference, candidate)]
    assert float(result) == sum(r == c for r, c in zip(reference, candidate)) / len(reference)
    assert result.first_divergence == pytest.approx(sum(parted) / len(parted))
    assert result.forced_top1 == pytest.approx(np.mean(forced))
    assert result.divergent_ids == [ids[i] for i in sorted(range(len(ids)), key=lambda i: parted[i]) if parted[i] < 4]
