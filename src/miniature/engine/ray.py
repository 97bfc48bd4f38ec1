"""The Ray engine: forward passes and attacks on a Ray cluster, with the local engine's results exactly.

``engine = "ray"``. ``ray.init()`` joins the cluster ``RAY_ADDRESS`` names, else starts a local Ray
on this machine. Everything else (data sets, fingerprints, the cache, neighbours, the checks) stays
with the driver, which alone writes the cache.

- Forward passes: the driver tokenizes and cuts the data set into the local engine's length-sorted
  batches, then hands consecutive shards of them to actors that each load the model once, on the
  device their resources give them (a GPU each when the device is CUDA). The same batches give the
  same outputs: dynamically quantized models scale activations per batch, so sharding by anything
  but the local engine's batches would change them.
- Attacks: examples go to actors that each hold the masked LM and the target. Each example is
  attacked with the attack's caches cleared first (so does the local engine), so its outcome does
  not depend on which examples a worker saw before.

Models must be readable at the same path (or hub id) on every node: a shared file system, or a hub id.
A task whose forward passes are not padded batches (causal LMs: windows read token by token, and a pair's
statistics need both models side by side) runs on the driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..errors import MissingExtraError, UsageError
from ..evidence import Model
from .local import Engine

#: Batches per task sent to an actor: large enough to amortise a call, small enough to balance actors.
SHARD_BATCHES = 4


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("engine = \"ray\" needs Ray: pip install 'pytest-miniature[ray]'") from None
    return ray


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

    def attack(self, lm: Any, similarity: Any, attack_settings: Any, item: tuple) -> tuple[dict[str, Any], str]:
        from ..attack.offline import import_textattack
        from ..attack.runs import attack_here, follow_target

        import_textattack()  # offline: the project's stopword list, no nltk.download
        follow_target(self.engine, self.model, [lm, *([similarity] if similarity else [])])
        return next(attack_here(self.engine, self.model, lm, similarity, attack_settings, [item]))


class RayEngine(Engine):
    """:class:`Engine` whose forward passes and attacks run on Ray actors."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._ray = None
        self._gpu_name: str | None = None

    @property
    def ray(self) -> Any:
        """Ray, connected: the cluster at ``RAY_ADDRESS``, else a local one started here."""
        if self._ray is None:
            ray = import_ray()
            if not ray.is_initialized():
                ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False,
                         configure_logging=False)
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
        ray = self.ray
        backend = self.backend(model)
        on_gpu = backend.device.startswith("cuda")
        count = self.settings.workers or max(1, self.cluster("GPU") if on_gpu else self.cluster("CPU"))
        count = max(1, min(count, tasks))
        actor = ray.remote(num_gpus=1, num_cpus=0)(ModelWorker) if on_gpu else ray.remote(num_cpus=1)(ModelWorker)
        return [actor.remote(self.settings, model.spec, backend.device, backend.dtype) for _ in range(count)]

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
                raise exc.as_instanceof_cause() from None
            except exceptions.RayActorError as exc:
                raise ModelLoadError(f"A Ray actor running model {model.name!r} died (out of memory, or its process "
                                     f"crashed): {str(exc)[:300]}") from None

    def _compute(self, model: Any, backend: Any, eval_set: Any, task: Any):
        from ray.util import ActorPool

        if not task.batched:  # read otherwise than as the padded batches actors run (causal LMs' windows): here
            return super()._compute(model, backend, eval_set, task)
        batches = -(-len(eval_set) // self.settings.batch_size)
        workers = self._workers(model, -(-batches // SHARD_BATCHES))

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
        pool = ActorPool(workers)
        lm, similarity = Model(None, lm.spec), Model(None, similarity.spec) if similarity is not None else None
        try:
            yield from self._results(
                pool.map_unordered(lambda worker, item: worker.attack.remote(lm, similarity, settings, item), todo), target)
        finally:
            self._release(workers)
