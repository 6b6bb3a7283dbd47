"""`dapo plan`: the cost arithmetic against hand-worked numbers, the measured means, the model size, the command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.cli import cli_main
from dapo.pipeline.plan import Assumptions, fsdp_shards, measure_means, model_shape, plan
from dapo.pipeline.plan_costs import Device, ModelShape, StageCost, Workload, stage_costs
from dapo.pipeline.plan_memory import TrainSetup, block_params, training_memory, variants

SMALL = Workload(problems=1, n_samples=2, n_keep=1, n_rollouts=2, steps=2, tokens_per_step=3, prompt_tokens=4)
NO_ATTENTION = ModelShape(params=10, layers=0, hidden=0)


def _by_stage(costs: list[StageCost]) -> dict[str, tuple[float, float, float]]:
    return {c.stage: (c.processed, c.generated, c.flops) for c in costs}


def test_stage_tokens_worked_by_hand():
    """P=1 problem, n=2 samples, k=1 kept, r=2 rollouts, T=2 steps of tau=3 tokens, p=4 prompt tokens:
    sampling:  processed p = 4; generated 2 samples x (2 x 3 + eos) = 14
    rollouts:  states s_0 (4 tokens), s_1 (4 + 3 = 7): processed 11; from s_0 2 x (6 + eos), from s_1 2 x (3 + eos): 22
    critic:    one solution of 4 + 6 = 10 tokens
    scoring:   states (11) + 2 states x 2 candidates x 3 tokens (12) = 23 for the critic, 23 for the reference: 46
    actor:     23
    FLOPs without attention: 2 N = 20 per token forward, 60 trained: sampling 18 x 20, critic 10 x 60."""
    costs = _by_stage(stage_costs(SMALL, NO_ATTENTION))
    assert costs["sampling"] == (4, 14, 360)
    assert costs["MC rollouts"] == (11, 22, 660)
    assert costs["critic"] == (10, 0, 600)
    assert costs["scoring"] == (46, 0, 920)
    assert costs["actor"] == (23, 0, 1380)


def test_shares_epochs_and_validation_scale_the_right_stages():
    """u = 0.5 distinct candidates: groups 11 + 2 x 2 x 0.5 x 3 = 17; f = 0.5 states kept: scoring 17 x 1.5, actor
    17 x 0.5; 3 critic epochs on 90% of the data: 10 x 3 x 0.9 = 27."""
    w = Workload(**{**SMALL.__dict__, "unique_actions": 0.5, "states_kept": 0.5, "critic_epochs": 3})
    w = Workload(**{**w.__dict__, "critic_val_fraction": 0.1})
    costs = _by_stage(stage_costs(w, NO_ATTENTION))
    assert costs["scoring"][0] == pytest.approx(25.5)
    assert costs["actor"][0] == pytest.approx(8.5)
    assert costs["critic"][0] == pytest.approx(27)
    assert costs["MC rollouts"][:2] == (11, 22)  # Stage A does not depend on them


def test_rollouts_grow_with_the_square_of_the_steps():
    double = Workload(**{**SMALL.__dict__, "steps": 4})
    generated = [_by_stage(stage_costs(w, NO_ATTENTION))["MC rollouts"][1] for w in (SMALL, double)]
    assert generated == [22, 2 * (3 * 4 * 5 / 2 + 4)]  # 22 -> 68: T (T + 1) / 2 goes 3 -> 10


def test_attention_adds_4_L_d_per_token_of_context():
    costs = _by_stage(stage_costs(SMALL, ModelShape(params=10, layers=2, hidden=8)))
    assert costs["critic"][2] == pytest.approx(3 * 10 * (20 + 4 * 2 * 8 * 5))  # context: half the solution, 5


def test_device_hours():
    cost = StageCost("critic", "train", 1.0, 0.0, 3.6e15)
    assert Device(tflops=1.0, train_utilization=1.0).hours(cost) == pytest.approx(1.0)
    assert Device(tflops=1.0, generate_utilization=0.5).hours(StageCost("x", "generate", 1, 1, 3.6e15)) == 2.0


def test_measure_means(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [("Start at 3.\n", "3 + 4 = 7\nAnswer: 7"), ("Start at 5.\n", "5 - 1 = 4\n4 * 2 = 8\nAnswer: 8")]
    pairs.append(("Q", None))
    means = measure_means(pairs, tiny_model_dir)
    assert means["problems"] == 3 and means["steps"] == 2.5  # (2 + 3) / 2, the unsolved one left out
    solution_tokens = sum(len(tokenizer(p + s).input_ids) - len(tokenizer(p).input_ids) for p, s in pairs[:2])
    assert means["tokens_per_step"] == pytest.approx(solution_tokens / 5)
    assert means["prompt_tokens"] == pytest.approx(sum(len(tokenizer(p).input_ids) for p, _ in pairs) / 3)


def test_model_shape_counts_the_matrix_parameters(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    total = sum(p.numel() for p in model.parameters())
    shape = model_shape(tiny_model_dir)
    embedding = model.get_input_embeddings().weight.numel()
    expected = total if model.config.tie_word_embeddings else total - embedding
    config = model.config
    assert shape == ModelShape(
        params=float(expected),
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        vocab=config.vocab_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        intermediate=config.intermediate_size,
        embedding=0.0 if config.tie_word_embeddings else float(embedding),
    )


def test_prompt_trees_count_each_prompt_once():
    """P=2 problems, k=3 kept, T=2 steps of tau=3, p=4: rows of one padded solution each hold 3 x 2 x (4 + 6) = 60
    tokens; trees hold 2 x (4 + 3 x 6) = 44. Nothing else changes."""
    w = Workload(**{**SMALL.__dict__, "problems": 2, "n_samples": 3, "n_keep": 3})
    plain, trees = (_by_stage(stage_costs(x, NO_ATTENTION)) for x in (w, replace(w, critic_prompt_trees=True)))
    assert plain["critic"][0] == 60 and trees["critic"][0] == 44
    assert {k: v for k, v in plain.items() if k != "critic"} == {k: v for k, v in trees.items() if k != "critic"}


def test_plan_notes_prompt_trees_and_rollout_reuse(tiny_model_dir, capsys):
    overlays = ["--data", '{"pack_prompts": true}', "--stage_a", '{"rollout": {"reuse_rollouts": true}}']
    cli_main(["plan", "--config", "configs/iterate.yaml", "--policy_path", tiny_model_dir, *overlays])
    out = capsys.readouterr().out
    assert "each problem's prompt counted once" in out and "generated tokens and hours are upper bounds" in out


def test_plan_command_reads_the_iterate_config(tiny_model_dir, capsys):
    cli_main(["plan", "--config", "configs/iterate.yaml", "--policy_path", tiny_model_dir, "--device.tflops", "1"])
    out = capsys.readouterr().out
    assert "256 problems, 32 samples, 6 kept, 16 rollouts" in out  # configs/critic.yaml: limit 256, paper counts
    assert "| MC rollouts |" in out and "| **2 rounds** |" in out
    assert "| critic: as configured |" in out and "| actor: QLoRA 4-bit r=16 + checkpointing |" in out
    assert "fits: peak <= 80 GB" in out


CONFIGS = Path(__file__).resolve().parents[1] / "configs"

LLAMA_8B = ModelShape(params=7.5e9, layers=32, hidden=4096, vocab=128256, heads=32, kv_heads=8,
                      intermediate=14336, embedding=128256 * 4096)  # fmt: skip
ACTOR_SETUP = TrainSetup(tokens=8192, sequence=1024, logit_tokens=4096)


def test_memory_responds_to_each_switch():
    """LoRA cuts gradients and optimizer state to the adapters', 4-bit cuts the weights, checkpointing cuts the
    activations, 8-bit AdamW cuts the optimizer state 4x, and the fits flag flips at the device limit."""
    full = training_memory(LLAMA_8B, ACTOR_SETUP)
    assert full.weights == pytest.approx(4 * (7.5e9 + 128256 * 4096))  # fp32, the untied embedding included
    assert full.optimizer == 2 * full.gradients == 2 * full.weights  # AdamW: 2 fp32 moments per weight
    lora = training_memory(LLAMA_8B, replace(ACTOR_SETUP, lora_r=16))
    assert lora.gradients < full.gradients / 100 and lora.optimizer < full.optimizer / 100
    assert lora.weights > full.weights and lora.activations == full.activations
    qlora = training_memory(LLAMA_8B, replace(ACTOR_SETUP, lora_r=16, load_in="4bit"))
    assert qlora.weights < lora.weights / 3 and qlora.gradients == lora.gradients  # embeddings stay fp32
    checkpointed = training_memory(LLAMA_8B, replace(ACTOR_SETUP, checkpointing=True))
    assert checkpointed.activations < full.activations / 3 and checkpointed.weights == full.weights
    adam8 = training_memory(LLAMA_8B, replace(ACTOR_SETUP, optimizer="adamw8bit"))
    assert adam8.optimizer == full.optimizer / 4
    assert checkpointed.peak < full.peak and qlora.peak < lora.peak
    assert full.fits(full.peak) and not full.fits(full.peak - 1)


def test_fsdp_shards_the_state_but_not_the_activations():
    """Under FSDP2 over 8 devices each holds an eighth of the weights, gradients and optimizer state plus one
    gathered block; activations are per device as before. The degree comes from configs/fsdp.yaml's strategy, and
    the FSDP2 row is offered for full fine-tuning only."""
    full = training_memory(LLAMA_8B, ACTOR_SETUP)
    sharded = training_memory(LLAMA_8B, replace(ACTOR_SETUP, shards=8))
    block = 4 * block_params(LLAMA_8B) / LLAMA_8B.layers * 7 / 8
    assert sharded.weights == pytest.approx(full.weights / 8 + block)
    assert sharded.gradients == pytest.approx(full.gradients / 8 + block)
    assert sharded.optimizer == pytest.approx(full.optimizer / 8) and sharded.activations == full.activations
    fsdp = yaml.safe_load((CONFIGS / "fsdp.yaml").read_text())["trainer"]
    assert fsdp_shards(fsdp) == 2 and fsdp_shards({"strategy": "ddp"}) == 1 and fsdp_shards({}) == 1
    assert "FSDP2 over 8 + checkpointing" in variants(ACTOR_SETUP)
    assert not any(name.startswith("FSDP2") for name in variants(replace(ACTOR_SETUP, lora_r=16)))


def test_critic_memory_has_no_logits():
    """The critic swaps the LM head for a value head: no logits, so longer vocabularies cost it nothing but the
    embedding."""
    critic = replace(ACTOR_SETUP, lm_head=False, logit_tokens=0)
    small_vocab = replace(LLAMA_8B, vocab=1000)
    assert training_memory(LLAMA_8B, critic).activations == training_memory(small_vocab, critic).activations
    assert training_memory(LLAMA_8B, ACTOR_SETUP).activations > training_memory(small_vocab, ACTOR_SETUP).activations


def test_plan_says_whether_each_stage_fits(tiny_model_dir, capsys):
    """A tiny model fits 1 GB; nothing fits 1 byte."""
    args = ["plan", "--config", "configs/iterate.yaml", "--policy_path", tiny_model_dir]
    cli_main([*args, "--device.memory_gb", "1"])
    assert "| no |" not in capsys.readouterr().out
    cli_main([*args, "--device.memory_gb", "1e-9"])
    assert "| yes |" not in capsys.readouterr().out


def test_plan_without_policy_or_assumptions_says_what_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"assume\.problems"):
        plan(policy_path=str(tmp_path / "none"))
    assumed = Assumptions(problems=10, steps=5, tokens_per_step=10, prompt_tokens=50)
    with pytest.raises(FileNotFoundError, match=r"model\.params"):
        plan(policy_path=str(tmp_path / "none"), assume=assumed)
    costs = plan(policy_path=None, assume=assumed, model=NO_ATTENTION)
    assert [c.stage for c in costs] == ["sampling", "MC rollouts", "critic", "scoring", "actor"]
