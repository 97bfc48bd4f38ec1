"""knn_agreement and ood_agreement through the Session, on tiny in-process models and real text."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from miniature import (
    GateFailure,
    ModelLoadError,
    Session,
    Settings,
    UsageError,
    assert_knn_agreement,
    assert_ood_agreement,
    knn_agreement,
    ood_agreement,
)
from miniature.characteristics.distribution import held_out_split


@pytest.fixture
def runner() -> Session:
    return Session(Settings(cache_dir=None))


def brute_neighbours(x: np.ndarray, k: int) -> list[set[int]]:
    """Each point's k most cosine-similar other points, by sorting every pair in float64 (ties by index)."""
    x = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    sims = x @ x.T
    return [set(sorted((j for j in range(len(x)) if j != i), key=lambda j: (-sims[i, j], j))[:k]) for i in range(len(x))]


def brute_mean_knn(a: np.ndarray, b: np.ndarray, k: int) -> float:
    na, nb = brute_neighbours(a, k), brute_neighbours(b, k)
    return float(np.mean([len(x & y) / len(x | y) for x, y in zip(na, nb)]))


def test_knn_agreement_of_real_models_matches_brute_force_and_sweeps_k(tiny_models, runner):
    data = runner.dataset(str(tiny_models.eval_csv))
    ref, student = runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student))
    result = knn_agreement(ref, student, data, k=10)
    a, b = ref.outputs(data).cls, student.outputs(data).cls
    assert float(result) == pytest.approx(brute_mean_knn(a, b, 10))
    assert result.variance == pytest.approx(float(np.var(result.per_point)))
    assert sorted(result.sweep) == [5, 10, 20, 50, 100] and result.sweep[10][0] == pytest.approx(float(result))
    same = knn_agreement(ref, runner.model(f"onnx:{tiny_models.onnx}"), data, k=10)
    assert float(same) > 0.95  # the fp32 export computes the same embeddings
    mean = knn_agreement(ref, student, data, k=10, pooling="mean")
    assert mean.pooling == "mean" and float(mean) == pytest.approx(brute_mean_knn(ref.outputs(data).mean, student.outputs(data).mean, 10))
    knn_agreement(ref, student, data, k=10)  # the same check again replaces its row; other settings keep theirs
    assert [(r.candidate, r.pooling) for r in runner.results if r.metric == "knn_agreement"] == [
        ("onnx/model.onnx", "cls"), ("student", "mean"), ("student", "cls")]


def test_knn_agreement_needs_no_labels_and_works_for_base_encoders(tiny_models, runner, tmp_path):
    (tmp_path / "u.csv").write_text("text\n" + "\n".join(f"sentence number {i} about films" for i in range(30)))
    data = runner.dataset(str(tmp_path / "u.csv"))
    result = knn_agreement(runner.model(str(tiny_models.base_encoder)), runner.model(str(tiny_models.teacher)), data, k=5)
    assert float(result) == 1.0  # the base encoder is the teacher's encoder: same CLS vectors
    assert sorted(result.sweep) == [5, 10, 20]  # K = 50, 100 exceed n - 1 = 29 and are skipped in the sweep


def test_onnx_graphs_with_an_unusual_hidden_state_name(tiny_models, runner, tmp_path):
    model = onnx.load(str(tiny_models.onnx))
    rename = lambda names: ["encoder_out_7" if n == "last_hidden_state" else n for n in names]  # noqa: E731
    for node in model.graph.node:
        node.output[:], node.input[:] = rename(node.output), rename(node.input)
    for output in model.graph.output:
        if output.name == "last_hidden_state":
            output.name = "encoder_out_7"
    folder = tmp_path / "renamed"
    shutil.copytree(tiny_models.onnx.parent, folder)
    onnx.save(model, str(folder / "model.onnx"))
    data = runner.dataset(str(tiny_models.eval_csv))
    ref = runner.model(str(tiny_models.teacher))
    auto = knn_agreement(ref, runner.model(f"onnx:{folder / 'model.onnx'}"), data, k=10)
    named = knn_agreement(ref, runner.model(f"onnx:{folder / 'model.onnx'}?hidden=encoder_out_7"), data, k=10)
    assert float(auto) > 0.95 and float(named) == float(auto)


def test_knn_gate_fails_with_the_least_agreeing_ids(tiny_models, runner):
    data = runner.dataset(str(tiny_models.eval_csv))
    ref, student = runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student))
    value = float(knn_agreement(ref, student, data, k=10))
    assert assert_knn_agreement(ref, student, data, k=10, min=value) == value
    assert runner.ledger.entries[-1].verdict.passed
    with pytest.raises(GateFailure, match=r"(?s)student does not see the neighbourhoods .*knn_agreement\s+>= 0.99\s+" + f"{value:.4f}" + r".*ids whose neighbourhoods agree least: "):
        assert_knn_agreement(ref, student, data, k=10, min=0.99)
    with pytest.raises(UsageError, match=r"'k' parameter of knn_agreement must be at most n - 1 = 199"):
        knn_agreement(ref, student, data, k=200)
    with pytest.raises(UsageError, match=r"'min' parameter of assert_knn_agreement must be a number in the range \[0, 1\]"):
        assert_knn_agreement(ref, student, data, min=2)


def test_ood_agreement_detects_news_among_reviews(tiny_models, ood_files, runner):
    train, challenge = runner.dataset(str(ood_files.train)), runner.dataset(str(ood_files.challenge))
    ref, student = runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student))
    result = ood_agreement(ref, student, challenge, train_set=train, k=10)
    assert 0 <= float(result) <= 1 and result.k == 10 and result.n == 120
    # Recompute the reference's detector by brute force from the cached embeddings: numpy distances
    # in float64 and Sun et al.'s threshold rule, transcribed (no function under test).
    bank_i, val_i = held_out_split(len(train))
    emb = ref.outputs(train).cls

    def kth_distance(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
        unit = lambda x: x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)  # noqa: E731
        return np.sort(np.linalg.norm(unit(queries)[:, None, :] - unit(bank)[None, :, :], axis=2), axis=1)[:, k - 1]

    known = np.sort(-kth_distance(emb[bank_i], emb[val_i], 10))
    threshold = known[round(0.05 * len(known))]
    scores = kth_distance(emb[bank_i], ref.outputs(challenge).cls, 10)
    detection = result.reference_detection
    assert detection.threshold == pytest.approx(-threshold, abs=1e-5)
    assert detection.flagged == {challenge.ids[i] for i in np.flatnonzero(~(-scores > threshold))}
    assert detection.auroc is not None and 0 <= detection.auroc <= 1 and detection.fpr_at_tpr95 is not None
    assert sorted(result.sweep) == [5, 10, 20, 50, 100]
    identical = ood_agreement(ref, runner.model(f"onnx:{tiny_models.onnx}"), challenge, train_set=train, k=10)
    assert float(identical) >= 0.9


def test_ood_agreement_with_an_explicit_validation_set_and_its_errors(tiny_models, ood_files, runner, tmp_path):
    train, challenge = runner.dataset(str(ood_files.train)), runner.dataset(str(ood_files.challenge))
    validation = runner.dataset(str(ood_files.train) + "[:60]")
    ref, student = runner.model(str(tiny_models.teacher)), runner.model(str(tiny_models.student))
    result = ood_agreement(ref, student, challenge, train_set=train, validation_set=validation, k=5)
    # Validation points are inside this bank, so at k = 5 they are at most their own 5th neighbour away.
    assert result.validation == validation.name and result.k == 5
    with pytest.raises(UsageError, match=r"'k' parameter of ood_agreement must be at most the bank's size, 540 points"):
        ood_agreement(ref, student, challenge, train_set=train, k=541)
    with pytest.raises(UsageError, match=r"Expected an EvalSet \(the train_set fixture"):
        ood_agreement(ref, student, challenge, train_set="train.csv")
    assert float(result) < 1  # the student's OOD set differs from its teacher's, so a gate at 1.0 fails
    with pytest.raises(GateFailure, match=r"(?s)does not flag the out-of-distribution points.*ood_agreement\s+>= 1\s+"
                       + f"{float(result):.4f}" + r".*ids flagged by exactly one model: "):
        assert_ood_agreement(ref, student, challenge, train_set=train, validation_set=validation, k=5, min=1.0)


def test_held_out_split_is_seeded_disjoint_and_complete():
    bank, val = held_out_split(101)
    assert len(val) == 10 and len(bank) == 91 and not set(bank) & set(val) and set(bank) | set(val) == set(range(101))
    assert (held_out_split(101)[1] == val).all()
    with pytest.raises(UsageError, match=r"needs at least 2 points"):
        held_out_split(1)


def test_checks_need_hidden_states(tmp_path, tiny_models, runner):
    # An ONNX graph with only logits cannot give embeddings.
    model = onnx.load(str(tiny_models.onnx))
    keep = [o for o in model.graph.output if o.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    folder = tmp_path / "logits-only"
    shutil.copytree(tiny_models.onnx.parent, folder)
    onnx.save(model, str(folder / "model.onnx"))
    data = runner.dataset(str(tiny_models.eval_csv))
    with pytest.raises(ModelLoadError, match=r"gave no usable embeddings for the data-representation check"):
        knn_agreement(runner.model(str(tiny_models.teacher)), runner.model(f"onnx:{folder / 'model.onnx'}"), data)
    assert json.loads((folder / "config.json").read_text())["id2label"]


def test_each_model_is_searched_once_however_many_pairs_it_is_in(tiny_models, runner, monkeypatch):
    from miniature.characteristics import neighbours as module

    calls = []
    real = module.nearest_others
    monkeypatch.setattr(module, "nearest_others", lambda x, k: (calls.append(k), real(x, k))[1])
    data = runner.dataset(str(tiny_models.eval_csv))
    models = [runner.model(s) for s in (str(tiny_models.teacher), str(tiny_models.student), f"onnx:{tiny_models.onnx}")]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        knn_agreement(models[a], models[b], data, k=10)
    knn_agreement(models[1], models[2], data, k=5, sweep=())
    assert calls == [100, 100, 100]  # one search per model at the sweep's largest K; K=5 is sliced from it
