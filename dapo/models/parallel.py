"""FSDP2 at the edge: shard a freshly built model over the data-parallel mesh Lightning hands the module.

Under `ModelParallelStrategy` Lightning sets `LightningModule.device_mesh` before `configure_model()`; the modules
call `shard_blocks(model, self.device_mesh)` right after building their backbone. Each decoder block (the classes
a Hugging Face model lists in `_no_split_modules`) becomes its own FSDP2 unit, so only one block's full weights
are gathered at a time, and the root takes what is left (embeddings, final norm, heads). Under any other strategy
the mesh is None and the model is left as built. Nothing else in the package knows about sharding.

    dapo fit --config configs/critic.yaml --config configs/debug.yaml --config configs/fsdp.yaml
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from torch import nn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

M = TypeVar("M", bound=nn.Module)


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face model (by the class names it declares unsplittable)."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(model).__name__} declares no decoder block classes (_no_split_modules) to shard")
    return blocks


def shard_blocks(model: M, mesh: DeviceMesh | None) -> M:
    """`fully_shard` every decoder block, then the root, over the mesh's data-parallel dimension (no-op without
    a mesh). Tensor parallelism is not implemented: a mesh with a tensor-parallel size above 1 is refused."""
    if mesh is None:
        return model
    from torch.distributed.fsdp import fully_shard  # here: torch builds without distributed support lack it

    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
        raise ValueError("tensor parallelism is not implemented: use ModelParallelStrategy(tensor_parallel_size=1)")
    data_parallel = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
    for block in decoder_blocks(model):
        fully_shard(block, mesh=data_parallel)
    fully_shard(model, mesh=data_parallel)
    return model
