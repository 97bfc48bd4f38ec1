"""The Ray engine: forward passes and attacks on a Ray cluster, with the local engine's results exactly.

``engine = "ray"``. ``ray.init()`` joins the cluster ``RAY_ADDRESS`` names within ``ray_connect_timeout``
seconds (an unreachable one is an :class:`~miniature.errors.EngineError` naming it), else starts a local
Ray on this machine (also when ``RAY_ADDRESS`` is empty, as CI systems export unset variables).
Everything else (data sets, fingerprints, the cache, neighbours, the checks) stays with the driver,
which alone writes the cache. An error raised on an actor is raised on the driver as the local engine
raises it: its own one-line message, with the actor's traceback in a file the message names.

- Forward passes: the driver tokenizes and cuts the data set into the local engine's length-sorted
  batches, then hands consecutive shards of them to actors that each load the model once, on the
  device their resources give them (a GPU each when the device is CUDA). The same batches give the
  same outputs: dynamically quantized models scale activations per batch, so sharding by anything
  but the local engine's batches would change them.
- Attacks: examples go to actors that each hold the masked LM and the target. Each example is
  attacked with the attack's caches cleared first (so does the local engine), so its outcome does
  not depend on which examples a worker saw before.

Models must be readable at the same path (or hub id) on every node: a shared file system, or a hub id.
- Causal-LM pairs: the driver cuts the windows into the local engine's batches from the tokenizers, and
  actors that each hold both models (the reference and one candidate) compute the pair's statistics for
  shards of them; the driver merges them. A single causal LM's own pass (embeddings, choice scores) reads
  windows token by token and runs on the driver.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..errors import EngineError, MissingExtraError, UsageError
from ..evidence import Model
from .local import Engine

#: Batches per task sent to an actor: large enough to amortise a call, small enough to balance actors.
SHARD_BATCHES = 4


def _shards(n: int, size: int = 8) -> list[slice]:
    """Consecutive slices of ``n`` prompts, ``size`` each (a prompt is continued alone: any split gives the same)."""
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("engine = \"ray\" needs Ray: pip install 'pytest-miniature[ray]'") from None
    return ray


_INIT = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
_FIX = "start it, correct RAY_ADDRESS, or leave RAY_ADDRESS unset (or empty) to start a local Ray"


def connect(ray: Any, timeout: float) -> None:
    """Join the cluster ``RAY_ADDRESS`` names within ``timeout`` seconds, else start a local Ray here.

    Ray retries an unreachable address for minutes (Ray 2.x: ``NUM_REDIS_GET_RETRIES`` = 20 attempts in
    ``ray/_private/node.py``, each up to ~40 s of gRPC connect and GCS waits), so the address is first probed
    with a plain TCP connection (a refused or unrouted port fails at once), then ``ray.init`` runs in a daemon
    thread the driver waits on for what is left of ``timeout``: a port that accepts but never answers as Ray's
    GCS is an error then, and the abandoned thread ends with the process.
    """
    address = os.environ.get("RAY_ADDRESS")
    if address is None or not address.strip() or address.strip() == "local":
        try:  # unset: Ray's own choice (a `ray start` cluster of this machine, else a new one); empty: a new one
            ray.init(address=None if address is None else "local", **_INIT)
        except Exception as exc:
            raise EngineError(f"Could not start a local Ray: {type(exc).__name__}: {_first_line(exc)}") from None
        return
    import socket
    import threading
    import time

    address, deadline = address.strip(), time.monotonic() + timeout
    where = f"The Ray cluster at RAY_ADDRESS={address}"
    host, port = _endpoint(address, where)
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10.0)).close()
    except OSError as exc:
        raise EngineError(f"{where} cannot be reached ({host}:{port}: {exc.strerror or exc}); {_FIX}") from None
    failed: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, **_INIT)
        except BaseException as exc:  # handed to the driver's thread
            failed.append(exc)

    quiet = _Quiet()  # ray.init off the main thread logs that it set no SIGTERM handler: true, and no news
    logging.getLogger("ray._private.worker").addFilter(quiet)
    try:
        thread = threading.Thread(target=init, name="miniature: ray.init", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        logging.getLogger("ray._private.worker").removeFilter(quiet)
    if thread.is_alive():
        raise EngineError(f"{where} did not answer within {timeout:g} s (ray_connect_timeout in [tool.miniature], "
                          f"--ray-connect-timeout); {_FIX}")
    if failed:
        raise EngineError(f"{where} could not be joined: {type(failed[0]).__name__}: {_first_line(failed[0])}; "
                          f"{_FIX}") from None


def _endpoint(address: str, where: str) -> tuple[str, int]:
    """(host, port) ``ray.init`` connects to for ``address``: a Ray Client's ``ray://host[:port]``, else the GCS
    address as Ray itself resolves it (``auto``: a cluster of this machine; a local name: this node's address)."""
    from urllib.parse import urlsplit

    if "://" in address:
        try:
            parsed = urlsplit(address)
            return parsed.hostname or "", parsed.port or 10001
        except ValueError as exc:
            raise UsageError(f"Expected RAY_ADDRESS to be host:port, ray://host:port, auto or local but got "
                             f"{address!r} ({exc})") from None
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray that moved it: the address as written
        def canonicalize_bootstrap_address(address: str) -> str:
            if not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", address):
                raise ValueError(address)
            return address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except ValueError:
        raise UsageError(f"Expected RAY_ADDRESS to be host:port, ray://host:port, auto or local but got "
                         f"{address!r}") from None
    except ConnectionError as exc:
        raise EngineError(f"{where} names no cluster ({_first_line(exc)}); {_FIX}") from None
    host, _, port = resolved.rpartition(":")
    return host.strip("[]"), int(port)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(error: BaseException) -> str:
    return next((line for line in _ANSI.sub("", str(error)).splitlines() if line.strip()), "")


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(_ANSI.sub("", text).splitlines()) if line.strip()), "")


def _save_actor_traceback(text: str) -> str:
    """The actor's traceback, without colour codes, in a file of its own; its path."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", prefix="miniature-ray-traceback-", suffix=".txt", delete=False) as handle:
        handle.write(_ANSI.sub("", text) + "\n")
    return handle.name


def raised_on_actor(error: Any) -> BaseException:
    """What an actor raised (a ``RayTaskError``), as the local engine raises it: the cause itself, its message
    one line naming the file that holds the actor's traceback (Ray's own is 50 lines of colour codes)."""
    from ray.exceptions import RayError

    from ..errors import ModelLoadError

    note = f" (the actor's traceback is in {_save_actor_traceback(str(error))})"
    cause = getattr(error, "cause", None)  # a RayError when the cause could not be sent back: its last line says it
    if isinstance(cause, Exception) and not isinstance(cause, RayError) and cause.args and isinstance(cause.args[0], str):
        cause.args = (cause.args[0] + note, *cause.args[1:])
        return cause
    return ModelLoadError(_last_line(str(error)) + note)


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
                raise ModelLoadError(f"A Ray actor running model {model.name!r} {what}: {_last_line(str(exc))[:300]} "
                                     f"(the actor's traceback is in {_save_actor_traceback(str(exc))})") from None

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
