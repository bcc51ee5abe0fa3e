"""Every derived seed and seeded subset of the project, in one place (no torch at import).

- :func:`mix` combines a seed with integers (a chunk, an epoch, a block): ``s·1 000 003 + p``, part
  by part, optionally modulo ``2**bits``;
- :func:`named` combines a seed with names (a dataset and penalty, a report group): ``seed·1 000 003 +
  crc32("a/b")`` modulo ``2**bits``, stable across processes (unlike ``hash``);
- :func:`subset` is the sorted seeded subset of ``range(n_total)`` used for training fractions, the
  evaluated test images and ROAR's training images.
"""

from __future__ import annotations

import zlib

PRIME = 1_000_003


def mix(seed: int, *parts: int, bits: int | None = None) -> int:
    """``seed`` combined with ``parts`` (``s = s·PRIME + p`` for each part), modulo ``2**bits`` if given."""
    s = int(seed)
    for p in parts:
        s = s * PRIME + int(p)
        if bits is not None:
            s %= 2**bits
    return s if bits is None else s % 2**bits


def named(seed: int, *key, bits: int = 32) -> int:
    """A seed per name (``named(0, "mnist", "gradient")``), independent of the order of calls."""
    return (int(seed) * PRIME + zlib.crc32("/".join(map(str, key)).encode())) % (2**bits)


def subset(n_total: int, n: int, seed: int):
    """The first ``n`` of a seeded permutation of ``range(n_total)``, sorted (all of them if
    ``n >= n_total``): ``torch.randperm(n_total, generator=Generator().manual_seed(seed))[:n].sort()``."""
    import torch

    return torch.randperm(n_total, generator=torch.Generator().manual_seed(int(seed)))[: min(n, n_total)].sort().values
