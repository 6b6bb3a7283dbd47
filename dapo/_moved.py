"""Module paths of dapo 0.1 (a flat package) that keep resolving, to the modules that hold their code now.

Checkpoints name the module that wrote them by class path (`dapo_module`, and the LightningCLI's `_class_path`:
`dapo.critic.CriticModule`), pickled hyperparameters name their classes' modules (`dapo.adapters.LoraSettings`),
and users' configs name `class_path`s. `import dapo` installs a finder that answers an old path with the new module
itself (one module object under two names, so `isinstance` and pickling agree). Listed: the modules of the classes a
checkpoint, its pickled hyperparameters or a config can name (modules, LoRA and quantization settings, the Stage A /
Stage B settings, sampling settings, the guard callbacks); `dapo.generation` is a package now and keeps its name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

MOVED = {
    "dapo.critic": "dapo.training.critic",
    "dapo.actor": "dapo.training.actor",
    "dapo.adapters": "dapo.models.adapters",
    "dapo.callbacks.training_guards": "dapo.training.guard_callbacks",
    "dapo.advantages": "dapo.stages.candidate_advantages",
    "dapo.stage_a": "dapo.stages.stage_a",
    "dapo.rollout": "dapo.stages.mc_rollouts",
    "dapo.sampling": "dapo.generation.protocol",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the new module (the import system then reads `sys.modules`)."""

    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: types.ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(MOVED[module.__name__])


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
