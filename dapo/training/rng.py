"""The random number generators a training step draws from, captured into and restored from a checkpoint.

Lightning restores weights, optimizer, LR schedule and loop position on resume but not the RNGs, so dropout in a
resumed run would draw different masks from an uninterrupted one. The modules store these states with every
checkpoint and put them back just before training continues (`TrainableBackbone`). Under data parallelism the
checkpoint holds rank 0's states, which every rank restores (seeded alike, ranks draw alike). States are kept as
tensors and plain Python values, so `torch.load(weights_only=True)` still reads the checkpoint.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU and every CUDA device's) generator states."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put back what `rng_states` captured (CUDA states only when this process has as many devices)."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["name"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    keys_tensor = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return {
        "name": name,
        "keys": keys_tensor,
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
