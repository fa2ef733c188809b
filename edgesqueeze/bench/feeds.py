"""Turn a data reader, a list of feed dicts or one feed dict into the feeds of a given batch size."""
from __future__ import annotations

from typing import Dict, List, Mapping

import numpy as np

from ..errors import InputError

MAX_POOL = 64  # feed dicts kept in memory for the timed loop (cycled)


def collect_feeds(source, limit: int = MAX_POOL) -> List[Dict[str, np.ndarray]]:
    """Materialise up to ``limit`` feed dicts from a reader (iterable of dicts), a list, or one dict.

    Raises:
        InputError: the source yields nothing or something that is not a feed dict.
    """
    if isinstance(source, Mapping):
        items = [dict(source)]
    else:
        items = []
        for feed in source:
            if not isinstance(feed, Mapping):
                raise InputError(f"benchmark data must yield feed dicts {{input: array}}, got {type(feed).__name__}")
            items.append(dict(feed))
            if len(items) >= limit:
                break
    if not items:
        raise InputError("the benchmark data is empty")
    return items


def batch_feeds(feeds: List[Dict[str, np.ndarray]], batch: int, count: int = 8) -> List[Dict[str, np.ndarray]]:
    """Return ``count`` feed dicts whose arrays have first dimension ``batch``.

    Rows are taken in order from all ``feeds`` concatenated along axis 0, wrapping around, so a batch of 8
    from 3 samples repeats samples rather than inventing data.

    Raises:
        InputError: the feeds disagree on names or an input has no batch dimension.
    """
    names = list(feeds[0])
    if any(list(f) != names for f in feeds):
        raise InputError("the benchmark feed dicts do not all have the same inputs")
    if all(all(a.ndim and a.shape[0] == batch for a in f.values()) for f in feeds):
        return feeds[:count] if len(feeds) >= count else feeds
    pools = {}
    for n in names:
        arrs = [f[n] for f in feeds]
        if any(a.ndim == 0 for a in arrs):
            raise InputError("a scalar input has no batch dimension", tensor=n)
        pools[n] = np.concatenate(arrs, axis=0)
    rows = min(p.shape[0] for p in pools.values())
    out = []
    for k in range(max(1, min(count, rows // batch if rows >= batch else 1))):
        idx = [(k * batch + j) % rows for j in range(batch)]
        out.append({n: np.ascontiguousarray(pools[n][idx]) for n in names})
    return out
