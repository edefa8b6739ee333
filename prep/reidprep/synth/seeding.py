"""Random generators keyed by what they are for, so that results do not depend on iteration order."""

from __future__ import annotations

import numpy as np

# First spawn-key element: what the generator is for. Never reuse or renumber (outputs would change).
IDENTITY = 0
IMAGE = 1
CAMERA = 2
SPLIT = 3
PLAN = 4
SCENE = 5
SCENE_TABLE = 6


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A generator for ``key`` under ``seed``, e.g. ``rng_for(seed, IMAGE, pid, k)``; independent of any other key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
