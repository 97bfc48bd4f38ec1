"""Exact nearest-neighbour search with FAISS, shared by the representation and distribution checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 C-contiguous (what FAISS takes); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms == 0, 1, norms), dtype=np.float32)


def _index(base: np.ndarray):
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        from ..errors import MissingExtraError

        raise MissingExtraError("faiss is needed for nearest-neighbour search: pip install faiss-cpu") from exc
    index = faiss.IndexFlatIP(base.shape[1])  # exact inner product = cosine on unit vectors
    index.add(base)
    return index


def nearest_others(embeddings: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each point's ``k`` nearest *other* points by cosine similarity.

    One batched exact FAISS search over L2-normalised rows. The query is removed by its
    index, not by dropping the first hit (a duplicate may come first). Rows are ordered by
    similarity, ties by the lower index, so the result does not depend on FAISS's tie order.
    """
    x = l2_normalise(embeddings)
    n = x.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"Expected 1 <= k <= n - 1 = {n - 1} for {n} points but got k={k}")
    # A few spare hits so that ties at the k-th place and the query itself can be settled here.
    fetch = min(n, k + 1 + 8)
    sims, ids = _index(x).search(x, fetch)
    sims = np.round(sims, 6)  # float noise must not break ties between equal similarities
    ids = np.where(ids == np.arange(n)[:, None], -1, ids)  # drop the query by id
    sims = np.where(ids < 0, -np.inf, sims)
    order = np.lexsort((ids, -sims), axis=1)  # by similarity, then by index; the query (-inf) last
    return np.take_along_axis(ids, order, axis=1)[:, :k]


def kth_neighbour_distances(bank: np.ndarray, queries: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """For each k in ``ks``: the Euclidean distance from each L2-normalised query to its k-th
    nearest L2-normalised bank point, from one exact FAISS search."""
    bank_n, queries_n = l2_normalise(bank), l2_normalise(queries)
    ks = sorted(set(ks))
    if not ks or ks[0] < 1 or ks[-1] > bank_n.shape[0]:
        raise ValueError(f"Expected every k in 1..{bank_n.shape[0]} (the bank's size) but got {list(ks)}")
    sims, _ = _index(bank_n).search(queries_n, ks[-1])
    # |a - b|^2 = 2 - 2 a.b for unit vectors; hits come most similar first.
    distances = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))
    return {k: distances[:, k - 1] for k in ks}
