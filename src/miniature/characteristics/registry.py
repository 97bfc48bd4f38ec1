"""The only list of characteristics: the built-ins, then those of the entry-point group
``miniature.characteristics``, then any registered at run time with :func:`register`.

An entry point names a :class:`~miniature.characteristics.base.Characteristic` subclass (or
instance), e.g. in a third party's pyproject.toml::

    [project.entry-points."miniature.characteristics"]
    logit_cosine = "acme_checks:LogitCosine"

Modules load on first use, so importing the registry costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..plugins import Registry

if TYPE_CHECKING:
    from .base import Characteristic

GROUP = "miniature.characteristics"

#: The built-ins, the paper's four in its order first: name -> "module:class".
BUILTINS = {
    "error_jaccard": "miniature.characteristics.prediction_errors:PredictionErrors",
    "knn_agreement": "miniature.characteristics.representation:DataRepresentation",
    "ood_agreement": "miniature.characteristics.distribution:DataDistribution",
    "attack_robustness": "miniature.characteristics.adversarial:AdversarialVulnerability",
    # Beyond the paper (Dutta et al. 2024; llama.cpp's KL-divergence mode): one module, two characteristics.
    "top1_agreement": "miniature.characteristics.output_agreement:TopOneAgreement",
    "kl_divergence": "miniature.characteristics.output_agreement:OutputDivergence",
    # Generated text, not teacher-forced: greedy continuations of causal LMs.
    "generation_agreement": "miniature.characteristics.generation:GenerationAgreement",
}

_registry = Registry(kind="characteristic", group=GROUP, base="miniature.characteristics.base:Characteristic",
                     builtins=BUILTINS)


def characteristics() -> dict[str, Characteristic]:
    """Every characteristic by name: built-ins first (the paper's order), then third parties'."""
    return _registry.all()


def names() -> list[str]:
    return list(characteristics())


def get(name: str, *, owner: str = "--checks") -> Characteristic:
    """The characteristic called ``name`` (or by one of its synonyms); a usage error naming the known ones."""
    known = characteristics()
    if name in known:
        return known[name]
    for characteristic in known.values():
        if name in characteristic.synonyms:
            return characteristic
    raise UsageError(f"Unknown characteristic {name!r} in {owner}; expected one of {', '.join(known)}")


def identity_of(result: Any) -> tuple:
    """The identity of a result given as a report's dict, by the setting fields its characteristic's result type
    declares (a characteristic this installation lacks: its pooling and K, as the built-ins that have settings)."""
    from .base import identity_from

    try:
        setting = get(result["metric"]).result_type.setting
    except UsageError:
        setting = ("pooling", "k")
    return identity_from(result, setting)


def reading(output: str) -> list[str]:
    """The names of the characteristics that read ``output`` ("predictions" or "embeddings") alone."""
    return [name for name, c in characteristics().items() if tuple(c.outputs) == (output,)]


def register(characteristic: Any) -> Characteristic:
    """Add a characteristic for this process (tests, notebooks); returns the instance."""
    return _registry.register(characteristic)


def unregister(name: str) -> None:
    _registry.unregister(name)
