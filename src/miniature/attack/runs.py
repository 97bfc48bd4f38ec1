"""Attack one target model on an attack set, once: outcomes are cached per example on disk.

Attacks are slow (thousands of queries per example), so each outcome is stored under a
key made of everything that decides it: the target's content fingerprint, the masked LM's
and the similarity encoder's fingerprints, every attack setting, the TextAttack version,
the tokenisation length and batch size, and the example's text and gold label. An
unchanged re-run attacks nothing; an interrupted one resumes where it stopped; adding
examples attacks only the new ones. Unreadable cache files are moved aside and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..atomic import set_aside, write_atomic
from ..cache import cache_key
from ..characteristics.adversarial import AttackOutcome
from ..data import EvalSet
from ..errors import CacheWarning, ModelLoadError, NotCached
from ..models.device import dtype_argument
from .offline import TEXTATTACK_VERSION
from .settings import AttackSettings

log = logging.getLogger("miniature")
#: Bumped whenever build_attack changes what an attack does (cached outcomes then go stale).
RECIPE_VERSION = 3  # 3: each example attacked with the attack's caches cleared
_FLUSH_SECONDS = 20.0


def attack_settings_key(settings: AttackSettings) -> dict[str, Any]:
    """The settings that change an example's outcome. ``examples`` only chooses which are attacked,
    and the models are keyed by their content fingerprints, not by how their specs are spelt."""
    return {k: v for k, v in asdict(settings).items() if k not in ("examples", "model", "similarity_model")}


def example_key(text: str, gold: int) -> str:
    return hashlib.sha256(json.dumps([text, gold]).encode()).hexdigest()[:24]


class OutcomeStore:
    """One JSON file of outcomes per (target, attack setting); written atomically, unless the cache is read only."""

    def __init__(self, path: Path | None, key: str, *, writable: bool = True) -> None:
        self.path, self.key, self.writable = path, key, writable
        self.outcomes: dict[str, dict[str, Any]] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("key") != key:
                    raise ValueError(f"file holds key {data.get('key')!r}")
                self.outcomes = {k: dict(v) for k, v in data["outcomes"].items()}
                for value in self.outcomes.values():
                    AttackOutcome(**value)  # validates every stored field
            except FileNotFoundError:  # a concurrent run moved it meanwhile
                self.outcomes = {}
            except Exception as exc:
                aside = set_aside(path) if writable else None
                if aside is not None:
                    warnings.warn(
                        f"miniature attack cache entry {path} is unreadable ({type(exc).__name__}: {exc}); "
                        f"moved it to {aside} and attacking again", CacheWarning, stacklevel=3,
                    )
                self.outcomes = {}

    def save(self, meta: dict[str, Any]) -> None:
        if self.path is not None and self.writable:
            write_atomic(self.path, json.dumps({"key": self.key, **meta, "outcomes": self.outcomes}).encode())


def attack_outcomes(engine: Any, target: Any, attack_set: EvalSet, settings: AttackSettings) -> list[AttackOutcome]:
    """Each example's outcome of attacking ``target`` (the first ``settings.examples`` of ``attack_set``) through
    ``engine`` (the local or the Ray engine). The data set's task gives each example's gold class: BERT-Attack
    flips a classifier's label."""
    check = "the adversarial-vulnerability check"
    gold = engine.task_for(attack_set).gold(engine, target, attack_set, check)
    count = len(attack_set) if settings.examples is None else min(settings.examples, len(attack_set))
    examples = [(attack_set.ids[i], attack_set.texts[i], int(gold[i])) for i in range(count)]
    lm = engine.handle(settings.model)
    similarity = engine.handle(settings.similarity_model) if settings.similarity_model else None
    helpers = [lm, similarity] if similarity else [lm]
    follow_target(engine, target, helpers)
    parts = {
        "kind": "attack", "recipe": RECIPE_VERSION, "target": engine.fingerprint(target), "textattack": TEXTATTACK_VERSION,
        "masked_lm": engine.fingerprint(lm),
        "placement": [engine.placement_key(engine.backend(m)) for m in (target, *helpers)],
        "similarity": engine.fingerprint(similarity) if similarity else None,
        "settings": attack_settings_key(settings), "max_length": engine.settings.max_length,
        "batch_size": engine.batching(engine.backend(target)),
    }
    key = cache_key(**parts)
    cache_dir = engine.settings.cache_dir
    # One process attacks a target at a time: another (a pytest-xdist worker) waits, then finds the outcomes stored.
    with engine.lock(key):
        store = OutcomeStore(Path(cache_dir) / "attacks" / key[:2] / f"{key}.json" if cache_dir else None, key,
                             writable=engine.output_cache is None or engine.output_cache.writable)
        keys = [example_key(text, label) for _, text, label in examples]
        todo = [(e, k) for e, k in zip(examples, keys) if k not in store.outcomes]
        engine.stats.attacks_from_cache += count - len(todo)
        if todo and engine.cache_only:
            raise NotCached(f"attacks on {target.name} are not all in the cache")
        if todo:
            meta = {"target": target.spec.text, "masked_lm": lm.spec.text, "settings": parts["settings"]}
            progress = engine.progress_of(f"attacking {target.name}", len(todo), unit="examples", per="min")
            start = last_flush = time.perf_counter()
            successes = 0
            # The engine attacks (here, or spread over Ray workers); only this process writes the cache.
            for done, (outcome, k) in enumerate(engine.attack(target, lm, similarity, settings, todo), 1):
                store.outcomes[k] = outcome
                engine.stats.attacked += 1
                successes += outcome["status"] == "successful"
                if time.perf_counter() - last_flush > _FLUSH_SECONDS or done == len(todo):
                    store.save(meta)  # an interrupted run resumes where it stopped
                    last_flush = time.perf_counter()
                progress.update(done, f"{successes} successful so far")
            engine.stats.seconds_attacking += time.perf_counter() - start
    return [AttackOutcome(**{**store.outcomes[k], "id": example_id}) for (example_id, _, _), k in zip(examples, keys)]


def follow_target(engine: Any, target: Any, helpers: list) -> None:
    """Run the attack's masked LM and similarity encoder on the target's device (a CPU-only helper stays on the
    CPU): the local engine and a Ray worker, which holds all three on its device, then place them alike."""
    device = engine.backend(target).device
    for helper in helpers:
        backend = engine.backend(helper)
        if not backend.loaded:
            backend.place("cpu" if backend.cpu_only() else device, backend.dtype)


def attack_here(engine: Any, target: Any, lm: Any, similarity: Any | None, settings: AttackSettings, todo: list):
    """Attack each ``((id, text, label), key)`` of ``todo`` in this process; yields (outcome as a dict, key)."""
    key = ("attack", target.spec.text, lm.spec.text, similarity.spec.text if similarity else None, settings)
    attack = engine.memo(key, lambda: _attack_for(engine, target, lm, similarity, settings))
    for (example_id, text, label), k in todo:
        # TextAttack caches model outputs across examples and queries only uncached texts, so a batch's
        # make-up (which changes a dynamically quantized model's outputs) would depend on the examples
        # attacked before; cleared, an example's outcome is the same wherever and after whatever it runs.
        attack.clear_cache()
        yield asdict(_outcome(example_id, attack.attack(text, label))), k


def _outcome(example_id: str, result: Any) -> AttackOutcome:
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult, SuccessfulAttackResult

    if isinstance(result, SuccessfulAttackResult):
        status = "successful"
    elif isinstance(result, SkippedAttackResult):
        status = "skipped"
    elif isinstance(result, FailedAttackResult):
        status = "failed"
    else:  # pragma: no cover - MaximizedAttackResult needs a maximizable goal, which this attack does not use
        raise TypeError(f"Unexpected attack result {type(result).__name__}")
    original, perturbed = result.original_result.attacked_text, result.perturbed_result.attacked_text
    return AttackOutcome(
        id=example_id, status=status, perturbed_text=perturbed.text,
        queries=int(result.perturbed_result.num_queries), words=len(original.words),
        words_changed=len(original.all_words_diff(perturbed)) if status == "successful" else 0,
    )


def _attack_for(engine: Any, target: Any, lm: Any, similarity: Any | None, settings: AttackSettings) -> Any:
    import torch
    from textattack.shared import utils as textattack_utils

    from .recipe import EncoderSimilarity, build_attack
    from .wrapper import BackendModelWrapper

    batch_size, max_length = engine.settings.batch_size, engine.settings.max_length
    # TextAttack moves the masked LM and its inputs to one global device: make it the one the run asks for.
    textattack_utils.device = torch.device(engine.backend(lm).device)
    masked_lm, tokenizer = engine.memo(("masked_lm", lm.spec.text), lambda: load_masked_lm(engine, lm))
    constraint = None
    if similarity is not None:
        encoder = engine.loaded_backend(similarity)
        constraint = EncoderSimilarity(encoder, threshold=settings.similarity_threshold,
                                       batch_size=batch_size, max_length=max_length)
    lm_positions = getattr(masked_lm.config, "max_position_embeddings", max_length)
    wrapper = BackendModelWrapper(engine.loaded_backend(target), batch_size=batch_size, max_length=max_length)
    return build_attack(wrapper, masked_lm=masked_lm, lm_tokenizer=tokenizer, settings=settings,
                        lm_max_length=min(max_length, lm_positions), batch_size=batch_size, similarity=constraint)


def load_masked_lm(engine: Any, lm: Any) -> tuple[Any, Any]:
    """The attack's masked LM and its tokenizer, from ``lm``'s local directory (or hub snapshot)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    backend = engine.backend(lm)
    if backend.spec.backend != "hf":
        raise ModelLoadError(
            f"The attack's masked LM must be a transformers model (hf: spec or directory); got {lm.spec.text!r}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(backend.local_dir, trust_remote_code=backend.trust_remote_code)
        model, info = AutoModelForMaskedLM.from_pretrained(backend.local_dir, output_loading_info=True,
                                                           trust_remote_code=backend.trust_remote_code,
                                                           **dtype_argument(backend.dtype))
    except Exception as exc:
        raise ModelLoadError(
            f"Could not load the attack's masked LM {lm.name!r} from {backend.local_dir} "
            f"(AutoModelForMaskedLM): {type(exc).__name__}: {exc}"
        ) from exc
    untrained = sorted(k for k in info.get("missing_keys", []) if "predictions" in k or "lm_head" in k)
    if untrained:
        raise ModelLoadError(
            f"Model {lm.name!r} ({backend.local_dir}) has no trained masked-LM head ({', '.join(untrained)} were "
            f"newly initialised), so its substitutes would be random; give a masked LM such as bert-base-uncased"
        )
    model.eval()
    return model.to(backend.device), tokenizer
