"""The output cache: a warm re-run runs no model; anything that changes the outputs changes the key."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from miniature import CacheWarning, Session, Settings
from miniature.cache import OutputCache, cache_key
from miniature.models import forward_counter
from miniature.outputs import ModelOutputs


def fresh_runner(cache: Path, **settings) -> Session:
    return Session(Settings(cache_dir=cache, **settings))


def test_put_and_get_round_trip_and_leave_no_temporary_files(tmp_path: Path):
    cache = OutputCache(tmp_path)
    outputs = ModelOutputs(logits=np.arange(6, dtype=np.float32).reshape(3, 2), cls=None)
    key = cache_key(model="m", dataset="d")
    path = cache.put(key, outputs, {"model": "m"})
    again = cache.get(key)
    np.testing.assert_array_equal(again.logits, outputs.logits)
    assert again.cls is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert cache.get(cache_key(model="m", dataset="other")) is None


def test_a_warm_cache_runs_no_model(tiny_models, tmp_path: Path):
    specs = [str(tiny_models.teacher), str(tiny_models.student), f"onnx:{tiny_models.onnx_int8}"]
    cold = fresh_runner(tmp_path)
    data = cold.dataset(str(tiny_models.eval_csv))
    first = [cold.model(s).outputs(data) for s in specs]
    assert cold.stats.computed == 3

    batches = forward_counter.batches
    warm = fresh_runner(tmp_path)
    second = [warm.model(s).outputs(warm.dataset(str(tiny_models.eval_csv))) for s in specs]
    assert forward_counter.batches == batches
    assert (warm.stats.computed, warm.stats.from_disk) == (0, 3)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.logits, b.logits)
        np.testing.assert_array_equal(a.cls, b.cls)


def test_changed_model_files_changed_preprocessing_and_spec_options_miss_the_cache(tiny_models, tmp_path: Path):
    model = tmp_path / "model"
    shutil.copytree(tiny_models.teacher, model)
    cache = tmp_path / "cache"
    data = str(tiny_models.eval_csv)
    fresh_runner(cache).model(str(model)).outputs(fresh_runner(cache).dataset(data))

    def computed(spec: str, **settings) -> int:
        runner = fresh_runner(cache, **settings)
        runner.model(spec).outputs(runner.dataset(data))
        return runner.stats.computed

    assert computed(str(model)) == 0
    assert computed(str(model), max_length=16) == 1
    assert computed(str(model), batch_size=7) == 1
    assert computed(f"hf:{model}?quantize=int8") == 1
    config = model / "config.json"
    config.write_text(config.read_text().replace('"positive"', '"Positive"'))
    assert computed(str(model)) == 1


def test_a_corrupted_entry_is_moved_aside_reported_and_recomputed(tiny_models, tmp_path: Path):
    runner = fresh_runner(tmp_path)
    data = runner.dataset(str(tiny_models.eval_csv))
    expected = runner.model(str(tiny_models.teacher)).outputs(data)
    [entry] = tmp_path.rglob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])

    again = fresh_runner(tmp_path)
    with pytest.warns(CacheWarning, match=r"cache entry .*\.npz is unreadable .*moved it to .*\.corrupt and recomputing"):
        outputs = again.model(str(tiny_models.teacher)).outputs(again.dataset(str(tiny_models.eval_csv)))
    assert again.stats.computed == 1
    np.testing.assert_allclose(outputs.logits, expected.logits)
    assert entry.with_suffix(".corrupt").is_file() and entry.is_file()


def test_no_cache_dir_writes_nothing(tiny_models, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = Session(Settings(cache_dir=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        runner.model(str(tiny_models.teacher)).outputs(runner.dataset(str(tiny_models.eval_csv)))
    assert list(tmp_path.iterdir()) == []


def test_entries_are_readable_like_ordinary_files(tmp_path: Path):
    import os
    import stat

    path = OutputCache(tmp_path).put("ab" * 32, ModelOutputs(logits=np.zeros((1, 2), np.float32), cls=None), {})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
