"""What the engine derives from models beyond one model's forward pass: a causal-LM pair read side by side, and
greedy continuations (each model's, and a candidate's teacher-forced agreement along the reference's).

Each is computed once per run and kept in the same disk cache as the outputs, keyed by every model's content
fingerprint, the data and the settings that change it, so a second run computes nothing and loads no model.
The computing itself is the task's (``run_pair``, ``generate``, ``follow``); the Ray engine overrides the
``_run_pair``, ``_generate`` and ``_follow`` steps to spread them over actors.

:class:`Derived` is part of :class:`~miniature.engine.local.Engine`; it reads the engine's cache, memo, backends
and settings.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..cache import cache_key
from ..data import EvalSet
from ..errors import NotCached
from ..evidence import POSITION_FIELDS, PositionStatistics
from ..tasks.base import Task

log = logging.getLogger("miniature")
#: The arrays of a model's continuations in the disk cache (see :meth:`Derived.generations`).
GENERATION_FIELDS = ("generated", "prompts", "prompt_lengths", "prompt_text", "text")


class Derived:
    """A causal-LM pair's statistics and greedy continuations, cached as outputs are."""

    def pair_statistics(self, reference: Any, candidate: Any, eval_set: EvalSet) -> PositionStatistics:
        """A pair's statistics read side by side (causal LMs): from memory, else the disk cache, else one pass of
        both models over the same batches (the task's ``run_pair``). A cache hit loads no model."""
        return self.memo(("pair", reference.key, candidate.key, eval_set.fingerprint),
                         lambda: self._pair_statistics(reference, candidate, eval_set))

    def _run_pair(self, task: Task, reference: Any, candidate: Any, eval_set: EvalSet) -> tuple[PositionStatistics, dict]:
        """The pair's statistics computed here, and how (see :attr:`ran`)."""
        backends = [self.loaded_backend(m) for m in (reference, candidate)]
        return task.run_pair(backends, [reference.name, candidate.name], eval_set, self.settings), {"engine": "local"}

    def _pair_statistics(self, reference: Any, candidate: Any, eval_set: EvalSet) -> PositionStatistics:
        task = self.task_for(eval_set)
        names = [reference.name, candidate.name]
        # Opened, not loaded: the tokenizers and the cache key need no weights.
        task.check_pair([self.backend(m) for m in (reference, candidate)], names)
        key = cache_key(pair=f"{task.name} positions", reference=self.fingerprint(reference),
                        candidate=self.fingerprint(candidate), dataset=eval_set.fingerprint,
                        max_length=self.settings.max_length,
                        batch_size=[self.batching(self.backend(m)) for m in (reference, candidate)],
                        **task.preprocessing(self.settings),
                        placement=[self.placement_key(self.backend(m)) for m in (reference, candidate)])
        cache = self._cache
        with self.lock(key):
            found = cache.get_arrays(key, POSITION_FIELDS) if cache else None
            where = ("pair", reference.key, candidate.key, eval_set.fingerprint)
            if found is not None and all(v is not None for v in found.values()) and \
                    len(found["token_counts"]) == len(eval_set):
                log.info("miniature: %s against %s on %s from cache", candidate.name, reference.name, eval_set.name)
                self.ran[where] = {"engine": "cache"}
                return PositionStatistics(**found, task=task.name)
            if self.cache_only:
                raise NotCached(f"{candidate.name} against {reference.name} on {eval_set.name} is not in the cache")
            statistics, self.ran[where] = self._run_pair(task, reference, candidate, eval_set)
            if cache:
                cache.put_arrays(key, {f: getattr(statistics, f) for f in POSITION_FIELDS},
                                 {"reference": reference.spec.text, "candidate": candidate.spec.text, "dataset": eval_set.name})
        return statistics

    def generations(self, model: Any, eval_set: EvalSet, *, prompt_tokens: int, new_tokens: int) -> dict[str, np.ndarray]:
        """``model``'s greedy continuation of each text (see tasks/generation.py): ``generated`` token ids (n, new
        tokens), the ``prompts`` (padded with -1 past ``prompt_lengths``), and both as text (``prompt_text``,
        ``text``): from memory, else the disk cache, else generated."""
        return self.memo(("generations", model.key, eval_set.fingerprint, prompt_tokens, new_tokens),
                         lambda: self._generations(model, eval_set, prompt_tokens, new_tokens))

    def _generations(self, model: Any, eval_set: EvalSet, prompt_tokens: int, new_tokens: int) -> dict[str, np.ndarray]:
        task, backend = self.task_for(eval_set), self.backend(model)
        key = cache_key(kind="generation", model=self.fingerprint(model), dataset=eval_set.fingerprint, task=task.name,
                        prompt_tokens=prompt_tokens, new_tokens=new_tokens, max_length=self.settings.max_length,
                        **self.placement_key(backend))
        where = ("generation", model.key, eval_set.fingerprint)
        with self.lock(key):
            found = self._cache.get_arrays(key, GENERATION_FIELDS) if self._cache else None
            if found is not None and all(v is not None for v in found.values()) and len(found["generated"]) == len(eval_set):
                self.ran[where] = {"engine": "cache"}
                return found
            if self.cache_only:
                raise NotCached(f"{model.name}'s continuations of {eval_set.name} are not in the cache")
            if backend.tokenizer is None:  # the prompts need the tokenizer alone (the Ray engine's driver has no weights)
                backend.load_tokenizer()
            starts = task.generation_prompts(backend, eval_set, self.settings, prompt_tokens=prompt_tokens,
                                             new_tokens=new_tokens)
            start = time.perf_counter()
            generated, self.ran[where] = self._generate(task, model, starts, new_tokens, eval_set)
            self.stats.seconds_computing += time.perf_counter() - start
            width = max(map(len, starts))
            found = {"generated": generated, "prompts": np.array([[*s, *[-1] * (width - len(s))] for s in starts]),
                     "prompt_lengths": np.array(list(map(len, starts))),
                     "prompt_text": np.array([backend.tokenizer.decode(s) for s in starts], dtype=str),
                     "text": np.array([backend.tokenizer.decode(g) for g in generated], dtype=str)}
            if self._cache:
                self._cache.put_arrays(key, found, {"model": model.spec.text, "dataset": eval_set.name, "kind": "generation"})
        return found

    def _generate(self, task: Task, model: Any, starts: list[list[int]], new_tokens: int,
                  eval_set: EvalSet) -> tuple[np.ndarray, dict]:
        """Each prompt's continuation, computed here, and how (see :attr:`ran`)."""
        progress = self.progress_of(f"generating with {model.name} on {eval_set.name}", len(starts), unit="prompts")
        return task.generate(self.loaded_backend(model), starts, new_tokens, eval_set, progress), {"engine": "local"}

    def followed(self, reference: Any, candidate: Any, eval_set: EvalSet, *, prompt_tokens: int,
                 new_tokens: int) -> np.ndarray:
        """(n, new tokens): whether ``candidate``'s most likely next token, read along ``reference``'s continuation of
        each text, is the reference's token: from memory, else the disk cache, else one teacher-forced pass."""
        return self.memo(("followed", reference.key, candidate.key, eval_set.fingerprint, prompt_tokens, new_tokens),
                         lambda: self._followed(reference, candidate, eval_set, prompt_tokens, new_tokens))

    def _followed(self, reference: Any, candidate: Any, eval_set: EvalSet, prompt_tokens: int, new_tokens: int) -> np.ndarray:
        task = self.task_for(eval_set)
        led = self.generations(reference, eval_set, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
        key = cache_key(kind="followed", reference=self.fingerprint(reference), candidate=self.fingerprint(candidate),
                        dataset=eval_set.fingerprint, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                        max_length=self.settings.max_length, placement=[self.placement_key(self.backend(m))
                                                                        for m in (reference, candidate)])
        where = ("followed", reference.key, candidate.key, eval_set.fingerprint)
        with self.lock(key):
            found = self._cache.get_arrays(key, ("same",)) if self._cache else None
            if found is not None and found["same"] is not None and len(found["same"]) == len(eval_set):
                self.ran[where] = {"engine": "cache"}
                return found["same"]
            if self.cache_only:
                raise NotCached(f"{candidate.name} along {reference.name}'s continuations of {eval_set.name} is not cached")
            starts = [list(p[:n]) for p, n in zip(led["prompts"], led["prompt_lengths"])]
            same, self.ran[where] = self._follow(task, candidate, starts, led["generated"], eval_set)
            if self._cache:
                self._cache.put_arrays(key, {"same": same}, {"reference": reference.spec.text,
                                                             "candidate": candidate.spec.text, "kind": "followed"})
        return same

    def _follow(self, task: Task, model: Any, starts: list[list[int]], continuations: np.ndarray,
                eval_set: EvalSet) -> tuple[np.ndarray, dict]:
        """The teacher-forced agreement computed here, and how (see :attr:`ran`)."""
        return task.follow(self.loaded_backend(model), starts, continuations, eval_set), {"engine": "local"}
