"""`dapo export`: turn a Lightning checkpoint of a CriticModule or ActorModule into a Hugging Face folder.

The checkpoint is a `.ckpt` file (DDP, one device) or the folder of shards `ModelParallelStrategy` (FSDP2)
writes; a sharded one is consolidated in memory first. The checkpoint records which module wrote it
(`dapo_module`), so one command serves both. The module is rebuilt from its saved hyperparameters, in full
precision (a QLoRA run's 4-bit base is reloaded unquantized), and its `model_path` must still exist: it gives the
architecture, the tokenizer and, for LoRA checkpoints (adapters only), the frozen base the adapters are merged
into. The folder is written to a temporary sibling and renamed into place: a kill leaves the old export or the new
one, never a half-written folder.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from dapo.records import staged_dir
from dapo.training.backbone import MODULE_KEY

SHARDED_METADATA = "meta.pt"  # what Lightning's ModelParallelStrategy writes beside the shards


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as one dict: a `.ckpt` file as saved, a sharded folder consolidated (weights, metadata)."""
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)  # mmap: no full read
    if not (path / SHARDED_METADATA).is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (neither a .ckpt file nor a sharded checkpoint folder)")
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / "consolidated.pt"
        dcp_to_torch_save(path, whole)  # every rank's shards, gathered into full tensors
        shards = torch.load(whole, map_location="cpu", weights_only=False)
    return torch.load(path / SHARDED_METADATA, map_location="cpu", weights_only=False) | {
        "state_dict": shards["state_dict"]
    }


def load_module(path: Path) -> Any:
    """The CriticModule / ActorModule of a checkpoint with its trained weights, built in full precision on CPU."""
    checkpoint = read_checkpoint(path)
    if MODULE_KEY not in checkpoint:
        raise ValueError(f"{path} was not written by a dapo CriticModule or ActorModule (no {MODULE_KEY!r} entry)")
    module_name, _, class_name = checkpoint[MODULE_KEY].rpartition(".")
    module_class = getattr(importlib.import_module(module_name), class_name)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}  # CLI bookkeeping
    module = module_class(**(hparams | {"load_in": None}))
    module.configure_model()
    result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    missing = [k for k in result.missing_keys if module.strict_loading or _is_trainable(module, k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not match the module it names: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return module


def _is_trainable(module: Any, key: str) -> bool:
    parameter = dict(module.named_parameters()).get(key)
    return parameter is not None and parameter.requires_grad


def export_checkpoint(ckpt: str, out: str) -> Path:
    """Write the model of a CriticModule / ActorModule checkpoint as a Hugging Face folder (safetensors).

    Args:
        ckpt: checkpoint written by `dapo fit`: a .ckpt file, or the folder of a sharded (FSDP) checkpoint.
        out: folder to write; replaced atomically if it exists.
    """
    ckpt_path, out_path = Path(ckpt), Path(out)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}")
    module = load_module(ckpt_path)
    with staged_dir(out_path) as tmp:
        module.save_hf(str(tmp))
    print(f"exported {ckpt_path} to {out_path}")
    return out_path
