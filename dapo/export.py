"""`dapo export`: turn a Lightning checkpoint of a CriticModule or ActorModule into a Hugging Face folder.

The checkpoint records which module wrote it (`dapo_module`), so one command serves both. The folder is
written to a temporary sibling and renamed into place: a kill leaves the old export or the new one. The module is
rebuilt from its `model_path` (architecture and tokenizer) before the checkpoint's weights are loaded, so that
folder must still exist.
"""

from __future__ import annotations

import importlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from dapo.records import replace_dir

MODULE_KEY = "dapo_module"


def module_class_path(module: Any) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _module_class(ckpt: Path) -> Any:
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)  # mmap: no full read
    if MODULE_KEY not in checkpoint:
        raise ValueError(f"{ckpt} was not written by a dapo CriticModule or ActorModule (no {MODULE_KEY!r} entry)")
    module_name, _, class_name = checkpoint[MODULE_KEY].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def export_checkpoint(ckpt: str, out: str) -> Path:
    """Write the model of a CriticModule / ActorModule checkpoint as a Hugging Face folder (safetensors).

    Args:
        ckpt: Lightning checkpoint (.ckpt) written by `dapo fit`.
        out: folder to write; replaced atomically if it exists.
    """
    ckpt_path, out_path = Path(ckpt), Path(out)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}")
    module = _module_class(ckpt_path).load_from_checkpoint(ckpt_path, map_location="cpu")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.parent / f".{out_path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        module.save_hf(str(tmp))
        replace_dir(tmp, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"exported {ckpt_path} to {out_path}")
    return out_path
