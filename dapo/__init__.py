"""dapo: Direct Advantage Policy Optimization (step-level offline RL for LLM reasoning) on PyTorch Lightning.

The heavy classes load on first use, so `import dapo` and `dapo --help` stay fast. The package is layered, each
layer importing only those below it (the contract in pyproject.toml, checked by `make lint`):

    cli -> pipeline (one module per command) -> callbacks -> training | stages -> data_modules
        -> generation | tasks -> models | graders -> records -> core      (`a | b`: a and b import neither)
"""

from __future__ import annotations

import importlib
from typing import Any

from dapo import _moved

__version__ = "0.1.0"

_LAZY = {
    "StepDataModule": "dapo.data_modules",
    "CriticModule": "dapo.training.critic",
    "ActorModule": "dapo.training.actor",
}

__all__ = ["__version__", *_LAZY]

_moved.install()  # dapo 0.1's module paths (`dapo.critic.CriticModule` in old checkpoints) keep resolving


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dapo' has no attribute {name!r}")
