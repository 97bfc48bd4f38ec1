"""The Ray engine: forward passes, causal-LM pairs, continuations and attacks on a Ray cluster, with the local
engine's results exactly.

``engine = "ray"``. The driver joins the cluster (:mod:`.ray_cluster`: ``RAY_ADDRESS`` within
``ray_connect_timeout`` seconds, else a local Ray). Everything else (data sets, fingerprints, the cache,
neighbours, the checks) stays with the driver, which alone writes the cache. An error raised on an actor is
raised on the driver as the local engine raises it: its own one-line message, with the actor's traceback in a
file the message names.

- Forward passes: the driver tokenizes and cuts the data set into the local engine's length-sorted
  batches, then hands consecutive shards of them to actors that each load the model once, on the
  device their resources give them (a GPU each when the device is CUDA). The same batches give the
  same outputs: dynamically quantized models scale activations per batch, so sharding by anything
  but the local engine's batches would change them.
- Attacks: examples go to actors that each hold the masked LM and the target. Each example is
  attacked with the attack's caches cleared first (so does the local engine), so its outcome does
  not depend on which examples a worker saw before.

- Causal-LM pairs: the driver cuts the windows into the local engine's batches from the tokenizers, and
  actors that each hold both models (the reference and one candidate) compute the pair's statistics for
  shards of them; the driver merges them. Greedy continuations: shards of prompts (each continued alone).
  A single causal LM's own pass (embeddings, choice scores) reads windows token by token on the driver.

Models must be readable at the same path (or hub id) on every node: a shared file system, or a hub id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..errors import EngineError, UsageError
from ..evidence import Model
from .local import Engine
from .ray_cluster import connect, import_ray, last_line, raised_on_actor, save_actor_traceback

#: Batches per task sent to an actor: large enough to amortise a call, small enough to balance actors.
SHARD_BATCHES = 4


def _shards(n: int, size: int = 8) -> list[slice]:
    """Consecutive slices of ``n`` prompts, ``size`` each (a prompt is continued alone: any split gives the same)."""
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


class ModelWorker:
    """A Ray actor holding one loaded model: runs shards of padded batches (``forward``) or attacks examples."""

    def __init__(self, settings: Any, spec: Any, device: str, dtype: str) -> None:
        from ..models import open_backend

        os.environ.pop("PYTEST_XDIST_WORKER_COUNT", None)  # Ray sized this actor's threads; an xdist share is not its own
        # The driver's settings, in this process, writing nothing; the attack's masked LM goes where the target is.
        self.engine = Engine(replace(settings, engine="local", cache_dir=None, device=device), live=False)
        self.model = Model(None, spec)
        backend = open_backend(spec)
        backend.trust_remote_code |= settings.trust_remote_code
        backend.place(device, dtype)  # as the driver resolved it (Ray shows each actor its GPU as device 0)
        self.engine.adopt(self.model, backend)

    def _backend(self):
        return self.engine.loaded_backend(self.model)

    def forward(self, shard: list[dict[str, Any]], need_hidden: bool) -> list[tuple[Any, Any]]:
        from ..models.base import forward_pooled

        backend = self._backend()
        return [forward_pooled(backend, batch, need_hidden) for batch in shard]

    def generate(self, starts: list[list[int]], new_tokens: int, eval_set: Any) -> Any:
        backend = self._backend()
        return self.engine.task_for(eval_set).generate(backend, starts, new_tokens, eval_set)

    def follow(self, starts: list[list[int]], continuations: Any, eval_set: Any) -> Any:
        backend = self._backend()
        return self.engine.task_for(eval_set).follow(backend, starts, continuations, eval_set)

    def attack(self, lm: Any, similarity: Any, attack_settings: Any, item: tuple) -> tuple[dict[str, Any], str]:
        from ..attack.offline import import_textattack
        from ..attack.runs import attack_here, follow_target

        import_textattack()  # offline: the project's stopword list, no nltk.download
        follow_target(self.engine, self.model, [lm, *([similarity] if similarity else [])])
        return next(attack_here(self.engine, self.model, lm, similarity, attack_settings, [item]))


class PairWorker:
    """A Ray actor holding both models of a pair (a causal LM's reference and one candidate): computes the pair's
    statistics for shards of the batches the driver cut, as the local engine computes them for all of them."""

    def __init__(self, settings: Any, specs: list[Any], places: list[tuple[str, str]]) -> None:
        from ..models import open_backend

        os.environ.pop("PYTEST_XDIST_WORKER_COUNT", None)  # Ray sized this actor's threads
        self.engine = Engine(replace(settings, engine="local", cache_dir=None), live=False)
        self.models = [Model(None, spec) for spec in specs]
        for model, (device, dtype) in zip(self.models, places):
            backend = open_backend(model.spec)
            backend.trust_remote_code |= settings.trust_remote_code
            backend.place(device, dtype)  # as the driver resolved it
            self.engine.adopt(model, backend)

    def shard(self, batches: list, work: Any, eval_set: Any) -> dict[int, Any]:
        backends = [self.engine.loaded_backend(m) for m in self.models]
        task = self.engine.task_for(eval_set)
        return task.pair_shard(backends, [m.name for m in self.models], batches, work, eval_set)


class RayEngine(Engine):
    """:class:`Engine` whose forward passes, causal-LM pairs and attacks run on Ray actors."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._actors_running = 0  # how many actors the forward pass under way runs on (see how())
        self._ray = None
        self._gpu_name: str | None = None
        self._unusable: EngineError | None = None  # said once: a cluster that was not there is not waited for again

    @property
    def ray(self) -> Any:
        """Ray, connected: the cluster at ``RAY_ADDRESS``, else a local one started here."""
        if self._unusable is not None:
            raise self._unusable
        if self._ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                try:
                    connect(ray, self.settings.ray_connect_timeout)
                except EngineError as exc:
                    self._unusable = exc
                    raise
            self._ray = ray
        return self._ray

    def cluster(self, resource: str) -> int:
        return int(self.ray.cluster_resources().get(resource, 0))

    def resolve_device(self, asked: str, where: str) -> str:
        """As the local engine's, but for the cluster's devices: ``auto`` is CUDA when the cluster has GPUs."""
        if not self.task.batched:  # run on the driver (see _compute)
            return super().resolve_device(asked, where)
        gpus = self.cluster("GPU")
        if asked == "auto":
            return "cuda:0" if gpus else "cpu"
        if asked.startswith("cuda") and not gpus:
            raise UsageError(f"{where} asks for {asked}, but the Ray cluster has no GPU (its resources: "
                             f"{self.ray.cluster_resources()}); use device = \"auto\" or \"cpu\"")
        return "cuda:0" if asked.startswith("cuda") else asked  # Ray shows each actor its own GPU as device 0

    def placement_key(self, backend: Any) -> dict[str, Any]:
        """As the local engine's; a GPU's name is asked of the cluster (the driver may have none)."""
        placement = backend.placement()
        if not placement.device.startswith("cuda") or not self.task.batched:
            return super().placement_key(backend)
        if self._gpu_name is None:
            def gpu_name() -> str:
                import torch

                return torch.cuda.get_device_name(0)

            self._gpu_name = self.ray.get(self.ray.remote(num_gpus=1, num_cpus=0)(gpu_name).remote())
        return placement.key(accelerator=self._gpu_name)

    def _workers(self, model: Any, tasks: int) -> list[Any]:
        """Actors for ``model``: ``workers``, else one per CPU (one per GPU on CUDA) of the cluster, and never more
        than ``tasks`` (each actor loads the model: one with nothing to do only costs start-up)."""
        backend = self.backend(model)
        return self._actors(ModelWorker, backend.device.startswith("cuda"), tasks, self.settings, model.spec,
                            backend.device, backend.dtype)

    def _actors(self, worker: type, on_gpu: bool, tasks: int, *args: Any) -> list[Any]:
        """``workers`` actors of class ``worker`` (else one per CPU of the cluster, per GPU on CUDA: one GPU each), never
        more than ``tasks``."""
        count = self.settings.workers or max(1, self.cluster("GPU") if on_gpu else self.cluster("CPU"))
        count = max(1, min(count, tasks))
        actor = self.ray.remote(num_gpus=1, num_cpus=0)(worker) if on_gpu else self.ray.remote(num_cpus=1)(worker)
        return [actor.remote(*args) for _ in range(count)]

    def how(self, backend: Any) -> dict[str, Any]:
        if backend.executor is not None:
            return {"engine": "ray", "actors": self._actors_running}
        return super().how(backend)

    def attacked_how(self) -> dict[str, Any]:
        return {"engine": "ray", "actors": self._actors_running}

    def _run_pair(self, task: Any, reference: Any, candidate: Any, eval_set: Any) -> tuple[Any, dict]:
        """The pair's statistics on actors that each hold both models: the driver cuts the batches from the
        tokenizers (as the local engine does, so the figures are its own), actors compute shards of them, and the
        driver merges what they return."""
        from ray.util import ActorPool

        backends = [self.backend(m) for m in (reference, candidate)]
        for backend in backends:
            if backend.tokenizer is None:
                backend.load_tokenizer()
        names = [reference.name, candidate.name]
        plan = task.pair_plan(backends, names, eval_set, self.settings)
        shards = [plan.batches[i : i + SHARD_BATCHES] for i in range(0, len(plan.batches), SHARD_BATCHES)]
        workers = self._actors(PairWorker, backends[0].device.startswith("cuda"), len(shards), self.settings,
                               [reference.spec, candidate.spec], [(b.device, b.dtype) for b in backends])
        parts: dict[int, Any] = {}
        try:
            pool = ActorPool(workers)
            for found in self._results(pool.map_unordered(
                    lambda worker, shard: worker.shard.remote(shard, plan.work(shard), eval_set), shards), candidate):
                parts.update(found)
        finally:
            self._release(workers)
        return task.pair_merge(plan, parts), {"engine": "ray", "actors": len(workers)}

    def _release(self, workers: list[Any]) -> None:
        # Actors hold their CPUs and GPUs: freed as soon as a model is done, so the next model's can start.
        for worker in workers:
            self.ray.kill(worker)

    def _results(self, results: Iterator[Any], model: Any) -> Iterator[Any]:
        """``results`` of ``model``'s actors, with an error raised in an actor (a broken model: exit 3) re-raised as
        itself, and an actor that died (out of memory, a crashed process) a model error naming the model."""
        from ..errors import ModelLoadError

        exceptions = self.ray.exceptions
        while True:
            try:
                yield next(results)
            except StopIteration:
                return
            except exceptions.RayTaskError as exc:
                raise raised_on_actor(exc) from None
            except exceptions.RayActorError as exc:
                what = "failed as it started" if exc.actor_init_failed else "died (out of memory, or its process crashed)"
                raise ModelLoadError(f"A Ray actor running model {model.name!r} {what}: {last_line(str(exc))[:300]} "
                                     f"(the actor's traceback is in {save_actor_traceback(str(exc))})") from None

    def _by_prompts(self, model: Any, calls: list, method: str) -> tuple[Any, dict]:
        """``calls`` (each a shard of prompts: (starts, *args)) on ``model``'s actors; the rows back in order."""
        import numpy as np
        from ray.util import ActorPool

        workers = self._workers(model, len(calls))
        try:
            pool = ActorPool(workers)
            rows = list(self._results(pool.map(lambda worker, call: getattr(worker, method).remote(*call), calls), model))
        finally:
            self._release(workers)
        return np.concatenate(rows), {"engine": "ray", "actors": len(workers)}

    def _generate(self, task: Any, model: Any, starts: list[list[int]], new_tokens: int, eval_set: Any) -> tuple[Any, dict]:
        """Prompts continue alone, so shards of them go to actors and come back as they would have here."""
        shards = _shards(len(starts))
        return self._by_prompts(model, [(starts[s], new_tokens, eval_set) for s in shards], "generate")

    def _follow(self, task: Any, model: Any, starts: list[list[int]], continuations: Any, eval_set: Any) -> tuple[Any, dict]:
        shards = _shards(len(starts))
        return self._by_prompts(model, [(starts[s], continuations[s], eval_set) for s in shards], "follow")

    def _compute(self, model: Any, backend: Any, eval_set: Any, task: Any):
        from ray.util import ActorPool

        if not task.batched:  # read otherwise than as the padded batches actors run (causal LMs' windows): here
            return super()._compute(model, backend, eval_set, task)
        batches = -(-len(eval_set) // self.settings.batch_size)
        workers = self._workers(model, -(-batches // SHARD_BATCHES))
        self._actors_running = len(workers)

        def on_actors(batches: list, need_hidden: bool) -> Iterator[tuple[Any, Any]]:
            shards = [[b for _, b in batches[i : i + SHARD_BATCHES]] for i in range(0, len(batches), SHARD_BATCHES)]
            pool = ActorPool(workers)
            for shard in self._results(pool.map(lambda worker, shard: worker.forward.remote(shard, need_hidden), shards),
                                       model):
                yield from shard

        try:
            # The driver needs the tokenizer only (to cut the same batches); the weights load on the actors.
            if backend.tokenizer is None:
                backend.load_tokenizer()
            backend.executor = on_actors
            return super()._compute(model, backend, eval_set, task)
        finally:
            backend.executor = None
            self._release(workers)

    def loaded_backend(self, model: Any):
        backend = self.backend(model)
        if backend.executor is not None:  # cutting batches for the actors: the tokenizer is all it needs here
            return backend
        return super().loaded_backend(model)

    def attack(self, target: Any, lm: Any, similarity: Any, settings: Any, todo: list):
        from ray.util import ActorPool

        workers = self._workers(target, len(todo))
        self._actors_running = len(workers)
        pool = ActorPool(workers)
        lm, similarity = Model(None, lm.spec), Model(None, similarity.spec) if similarity is not None else None
        try:
            yield from self._results(
                pool.map_unordered(lambda worker, item: worker.attack.remote(lm, similarity, settings, item), todo), target)
        finally:
            self._release(workers)
