"""The Ray engine on a real local Ray (2 CPUs): its outputs and attack outcomes equal the local engine's exactly."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")
# One local Ray at a time on a 2-core machine: under pytest-xdist (--dist loadgroup) these run on one worker.
pytestmark = pytest.mark.xdist_group("ray")

EXAMPLES = 6


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _session(engine: str, cache_dir, **settings):
    from miniature import Settings
    from miniature.session import Session

    return Session(Settings(engine=engine, cache_dir=cache_dir, batch_size=16, **settings), live=False)


def test_forward_passes_on_ray_actors_equal_the_local_engine_exactly(local_ray, tiny_models, tmp_path):
    from miniature.engine.ray import RayEngine
    from miniature.models.base import forward_counter

    computed = {}
    # fp32, torch dynamic int8 (scales activations per batch), onnxruntime int8, and an encoder with no head
    for spec in (tiny_models.teacher, f"{tiny_models.teacher}?quantize=int8", tiny_models.onnx_int8,
                 tiny_models.base_encoder):
        # Shards over two actors for the first model; one actor each for the rest (what differs is the model).
        workers = 2 if spec == tiny_models.teacher else 1
        local, remote = _session("local", None), _session("ray", tmp_path / "cache", workers=workers)
        assert isinstance(remote.engine, RayEngine)
        data = local.dataset(str(tiny_models.eval_csv))
        mine = computed[spec] = local.model(str(spec)).outputs(data)
        before = forward_counter.batches
        theirs = remote.model(str(spec)).outputs(remote.dataset(str(tiny_models.eval_csv)))
        assert forward_counter.batches - before == -(-len(data) // 16)  # every batch came back from an actor
        for name in ("logits", "cls", "mean"):
            a, b = getattr(mine, name), getattr(theirs, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=f"{spec} {name}")
        assert not remote.engine.backend(remote.model(str(spec))).loaded  # the driver loaded no weights
    # Only the driver writes the cache, and what it wrote is what the local engine computes.
    again = _session("local", tmp_path / "cache")
    cached = again.model(str(tiny_models.teacher)).outputs(again.dataset(str(tiny_models.eval_csv)))
    assert again.stats.from_disk == 1 and again.stats.computed == 0
    np.testing.assert_array_equal(cached.logits, computed[tiny_models.teacher].logits)


def test_qa_windows_on_ray_equal_the_local_engine(local_ray, tiny_qa_models):
    local, remote = _session("local", None, max_length=96), _session("ray", None, max_length=96)
    data = f"{tiny_qa_models.eval_json}[:24]"
    mine = local.model(str(tiny_qa_models.reference)).outputs(local.dataset(data))
    theirs = remote.model(str(tiny_qa_models.reference)).outputs(remote.dataset(data))
    assert list(mine.answers) == list(theirs.answers)
    np.testing.assert_array_equal(mine.span_scores, theirs.span_scores)
    np.testing.assert_array_equal(mine.cls, theirs.cls)


def test_attacks_on_ray_workers_equal_the_local_engine_exactly(local_ray, tiny_models, tiny_masked_lm, tmp_path):
    from miniature.attack.offline import import_textattack
    from miniature.attack.runs import attack_outcomes

    import_textattack()
    attack = {"model": str(tiny_masked_lm), "examples": EXAMPLES}
    outcomes = {}
    for engine in ("local", "ray"):
        session = _session(engine, tmp_path / engine, attack=attack)
        target = session.model(str(tiny_models.student))
        outcomes[engine] = attack_outcomes(session.engine, target, session.dataset(str(tiny_models.eval_csv)),
                                           session.settings.attack)
        assert session.stats.attacked == EXAMPLES
    assert outcomes["ray"] == outcomes["local"]
    assert any(o.status == "successful" for o in outcomes["ray"])


def test_a_broken_model_on_an_actor_is_a_model_error_naming_it(local_ray, tiny_models, tmp_path):
    import shutil

    from miniature.errors import ModelLoadError

    broken = tmp_path / "broken"
    shutil.copytree(tiny_models.teacher, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    session = _session("ray", None)
    with pytest.raises(ModelLoadError, match="broken"):
        session.model(str(broken)).outputs(session.dataset(str(tiny_models.eval_csv)))


def test_cuda_on_a_cluster_without_gpus_is_a_usage_error(local_ray, tiny_models):
    from miniature.errors import UsageError

    session = _session("ray", None, device="cuda")
    with pytest.raises(UsageError, match="no GPU"):
        session.model(str(tiny_models.teacher)).outputs(session.dataset(str(tiny_models.eval_csv)))


def test_causal_lm_pairs_on_ray_actors_equal_the_local_engine_exactly(local_ray, tiny_lms, tmp_path):
    """Actors that each hold both models compute shards of the pair's batches; the driver merges them: the local
    figures exactly, and the report says the pair ran on two actors."""
    from miniature import kl_divergence, top1_agreement

    figures, reports = {}, {}
    for engine in ("local", "ray"):
        # Windows of 32 tokens over texts of up to 200, and 1 MB of logits a batch: several batches to shard.
        session = _session(engine, None, task="causal-lm", max_length=200, logits_memory=1, workers=2)
        data = session.dataset(str(tiny_lms.long))
        reference = session.model(str(tiny_lms.gpt2))
        for candidate in (str(tiny_lms.gpt2_dropped), f"onnx:{tiny_lms.gpt2_int8}"):
            kl = kl_divergence(reference, session.model(candidate), data)
            top1 = top1_agreement(reference, session.model(candidate), data)
            figures[engine, candidate] = (kl.as_dict(), top1.as_dict())
        reports[engine] = session.report()
        assert not session.engine.backend(reference).loaded or engine == "local"  # the driver held no weights
    for (engine, candidate), found in figures.items():
        if engine == "ray":
            assert found == figures["local", candidate], candidate  # every figure, every id list, exactly
    ran = {(r["metric"], r["candidate"]): r["computed_by"] for r in reports["ray"]["results"]}
    assert set(map(str, ran.values())) == {str({"engine": "ray", "actors": 2})}, ran
    assert {r["computed_by"]["engine"] for r in reports["local"]["results"]} == {"local"}


def test_a_gguf_pair_on_ray_actors_equals_the_local_engine_exactly(local_ray, tiny_lms, tiny_ggufs):
    """An HF reference and a GGUF candidate on actors that each hold both (llama.cpp on the actor's one CPU): the local
    figures exactly."""
    from miniature import kl_divergence, top1_agreement

    figures = {}
    for engine in ("local", "ray"):
        session = _session(engine, None, task="causal-lm", max_length=200, logits_memory=1, workers=2)
        data = session.dataset(str(tiny_lms.texts))
        reference, candidate = session.model(str(tiny_lms.llama)), session.model(str(tiny_ggufs / "q4_0" / "model.Q4_0.gguf"))
        figures[engine] = (kl_divergence(reference, candidate, data).as_dict(), top1_agreement(reference, candidate, data).as_dict())
        assert engine == "local" or not session.engine.backend(candidate).loaded  # the driver held no weights
    assert figures["ray"] == figures["local"]  # every figure, every id list, exactly
    assert 0 < figures["local"][0]["value"]


def test_generation_on_ray_actors_equals_the_local_engine(local_ray, tiny_lms):
    """Each prompt is continued alone, so shards of prompts go to actors and come back as they would have here."""
    from miniature import generation_agreement

    found = {}
    for engine in ("local", "ray"):
        session = _session(engine, None, task="causal-lm", max_length=32, workers=2)
        data = session.dataset(str(tiny_lms.texts))  # 40 prompts: five shards of eight
        result = generation_agreement(session.model(str(tiny_lms.gpt2)), session.model(str(tiny_lms.gpt2_dropped)), data,
                                      prompt_tokens=8, new_tokens=8)
        found[engine] = (result.as_dict(), session.report()["results"][0]["computed_by"])
    assert found["ray"][0] == found["local"][0]
    assert found["ray"][1] == {"engine": "ray", "actors": 2} and found["local"][1] == {"engine": "local"}
