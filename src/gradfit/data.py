"""Data in: the seed article's synthetic points (files and arrays come later)."""

from __future__ import annotations

import torch

from .errors import OptionError

SEED = 1989  # the article's torch.manual_seed
N_POINTS = 15  # X = arange(0, 15)


def seed_generator(seed: int = SEED) -> torch.Generator:
    """A private random stream seeded like the article's ``torch.manual_seed(seed)``.

    A generator of our own leaves torch's global random state untouched, and draws
    the same numbers: the global CPU generator and a fresh ``torch.Generator`` are
    the same Mersenne Twister.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise OptionError(f"`seed` must be a whole number from 0 to 2**63-1, got {seed!r}.")
    return torch.Generator().manual_seed(seed)


def seed_data(seed: int = SEED, *, generator: torch.Generator | None = None):
    """The article's 15 noisy points: ``X = arange(0, 15)``, ``Y = rand(15)*3 + 0.9*(X-3)**2 + 1``.

    Returns ``(x, y)`` as float32 tensors, bit-identical to the article's for the
    default seed. Pass ``generator`` to keep drawing from the same stream afterwards
    (the article draws its initial parameters right after ``Y``).
    """
    g = seed_generator(seed) if generator is None else generator
    x = torch.arange(0, N_POINTS).float()
    y = torch.rand(N_POINTS, generator=g) * 3 + 0.9 * (x - 3) ** 2 + 1
    return x, y

