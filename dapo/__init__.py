"""dapo: Direct Advantage Policy Optimization (step-level offline RL for LLM reasoning) on PyTorch Lightning.

The heavy classes load on first use, so `import dapo` and `dapo --help` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "StepDataModule": "dapo.data_modules",
    "CriticModule": "dapo.critic",
    "ActorModule": "dapo.actor",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dapo' has no attribute {name!r}")
