"""Generation with an FSDP2-sharded model: every forward is a collective, so ranks must generate in lockstep.

Five problems on two ranks with two prompts per generate call: rank 0 holds three problems (two calls), rank 1 two
(one call) unless the benchmark callback pads its share, and rows stop at different lengths unless `generate`
keeps every rank stepping (synced_gpus). Either mistake hangs the ranks, which the test turns into a failure
after a deadline. The gathered result must equal the unsharded single-process evaluation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.multiprocessing as mp
from transformers import AutoModelForCausalLM

from dapo.callbacks.benchmark_eval import BenchmarkEval, _gather
from dapo.core.distributed import lockstep_share
from dapo.models.parallel import shard_blocks
from dapo.tasks import ArithTask

DEADLINE_SECONDS = 120


def _callback() -> BenchmarkEval:
    task = ArithTask(train_size=20, test_size=20, seed=0)
    return BenchmarkEval(task, limit=5, max_new_tokens=24, batch_size=2)


def _evaluate_on_rank(rank: int, store: str, model_path: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("data_parallel",))
    model = shard_blocks(AutoModelForCausalLM.from_pretrained(model_path), mesh)
    module = SimpleNamespace(model=model, device_mesh=mesh, hparams={"model_path": model_path})
    merged = _gather(_callback().evaluate(module, rank, 2), 2)  # type: ignore[arg-type]
    Path(out, f"rank{rank}.json").write_text(json.dumps([merged.ids, merged.responses, merged.sample_scores]))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    # The result is on disk. Skip interpreter teardown: destroying gloo's threads while the device mesh still holds
    # its groups can abort the process ("terminate called without an active exception"), seen once in CI.
    os._exit(0)


def test_lockstep_share_pads_short_shares():
    items = list("abcde")
    assert lockstep_share(items, 0, 2) == (["a", "c", "e"], 3)
    assert lockstep_share(items, 1, 2) == (["b", "d", "a"], 2)  # padded with a repeat, 2 real
    assert lockstep_share(items, 2, 3) == (["c", "a"], 1)


def test_benchmark_eval_with_a_sharded_model_matches_one_process(tmp_path, policy_dir):
    context = mp.start_processes(
        _evaluate_on_rank,
        args=(str(tmp_path / "store"), policy_dir, str(tmp_path)),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"sharded evaluation did not finish in {DEADLINE_SECONDS} s (ranks desynchronised)")
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    single = _callback().evaluate(SimpleNamespace(model=model, device_mesh=None, hparams={"model_path": policy_dir}))  # type: ignore[arg-type]
    expected = [single.ids, single.responses, single.sample_scores]
    assert len(single.ids) == 5 and any(single.responses[i][0] != single.responses[0][0] for i in range(5))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
