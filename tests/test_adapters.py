"""bitsandbytes and LoRA on CPU: 8-bit AdamW from YAML, frozen models in 8-bit / 4-bit nf4, LoRA and QLoRA for the
critic and the actor through `dapo fit`, and exports that merge the adapters into plain Hugging Face folders."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from builders import candidate_state_rows
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from dapo.cli import cli_main
from dapo.generation.hf_generator import HFGenerator
from dapo.generation.protocol import SamplingParams
from dapo.models import build_tiny_model
from dapo.models.adapters import LoraSettings, check_trainable_setup
from dapo.models.value import ValueModel
from dapo.pipeline.export import load_module
from dapo.records import Provenance, read_records, write_records
from dapo.stages.candidate_advantages import AdvantageConfig, run_advantages
from dapo.training.sft import supervised_finetune

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CRITIC = ["fit", "--config", str(CONFIGS / "critic.yaml"), "--config", str(CONFIGS / "debug.yaml")]
ACTOR = ["fit", "--config", str(CONFIGS / "actor.yaml"), "--config", str(CONFIGS / "debug.yaml")]
NO_LOGS = ["--trainer.logger", "false", "--trainer.limit_val_batches", "0"]


@pytest.fixture(scope="module")
def wide_policy(tmp_path_factory, arith) -> Path:
    """The session policy's recipe at hidden size 64: bitsandbytes' CPU kernels fail on the hidden-32 model."""
    texts = [arith.prompt(ex) + arith.reference_solution(ex) for ex in arith.load("train")]
    base = build_tiny_model(tmp_path_factory.mktemp("wide") / "base", texts, vocab_size=300, hidden_size=64)
    pairs = [(arith.prompt(ex), arith.reference_solution(ex)) for ex in arith.load("train")]
    return supervised_finetune(base, base.parent / "policy", pairs, steps=100)


@pytest.fixture
def workspace(tmp_path, wide_policy, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(wide_policy, "runs/arith/policy")
    return tmp_path


def _checkpoint(stage: str) -> dict:
    return torch.load(f"runs/arith/{stage}/checkpoints/last.ckpt", weights_only=False)


def test_8bit_adamw_from_yaml_keeps_8bit_state(workspace):
    optimizer = ["--model.init_args.optimizer.class_path", "bitsandbytes.optim.AdamW8bit"]
    cli_main([*CRITIC, *NO_LOGS, *optimizer, "--model.init_args.optimizer.init_args.lr", "0.001"])
    state = _checkpoint("critic")["optimizer_states"][0]["state"]
    dtypes = {t.dtype for t in _tensors(state)}
    assert torch.uint8 in dtypes  # 8-bit moments (bitsandbytes keeps tensors under 4096 elements in fp32)


def _tensors(tree: object) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for value in tree.values() for t in _tensors(value)]
    return []


def test_frozen_models_load_in_8bit_and_4bit(arith, tmp_path, wide_policy):
    prompts = [arith.prompt(ex) for ex in list(arith.load("test"))[:3]]
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=12)
    wider = wide_policy
    full = HFGenerator.from_pretrained(str(wider)).generate(prompts, params)
    for load_in, layer in (("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")):
        generator = HFGenerator.from_pretrained(str(wider), load_in=load_in)  # type: ignore[arg-type]
        assert type(generator.model.model.layers[0].mlp.up_proj).__name__ == layer
        quantized = generator.generate(prompts, params)
        assert [len(texts) for texts in quantized] == [len(texts) for texts in full]

    critic = tmp_path / "critic"
    ValueModel.from_pretrained(wider, missing_head="init").save_pretrained(critic)
    generator.tokenizer.save_pretrained(critic)
    states = write_records(candidate_state_rows(arith, 4), tmp_path / "states", "states", Provenance("test"))
    config = AdvantageConfig(str(states), str(critic), str(wider), str(tmp_path / "b"), min_gap=0.0)
    run_advantages(config)
    run_advantages(replace(config, out_dir=str(tmp_path / "b4"), load_in="4bit"))
    full_rows, nf4_rows = (read_records(tmp_path / d / "actions", "actions").to_list() for d in ("b", "b4"))
    assert [r["action"] for r in full_rows] == [r["action"] for r in nf4_rows]
    gaps = [abs(a["ref_logprob"] - b["ref_logprob"]) for a, b in zip(full_rows, nf4_rows, strict=True)]
    assert 0 < max(gaps) < 0.5 * max(abs(r["ref_logprob"]) for r in full_rows)  # quantized: close, not equal


def test_quantized_base_needs_adapters():
    with pytest.raises(ValueError, match="QLoRA"):
        check_trainable_setup("4bit", None, sharded=False)
    with pytest.raises(ValueError, match="FSDP2"):
        check_trainable_setup(None, LoraSettings(), sharded=True)


def _assert_lora_checkpoint(stage: str) -> None:
    keys = _checkpoint(stage)["state_dict"].keys()
    assert keys and all("lora_" in k or k.startswith("model.head.") for k in keys), sorted(keys)[:5]


@pytest.mark.parametrize("overlay", ["lora.yaml", "qlora.yaml"])
def test_lora_critic_and_actor_train_and_export_merged(workspace, overlay):
    lora = ["--config", str(CONFIGS / overlay), *NO_LOGS]
    cli_main([*CRITIC, *lora, "--model.init_args.optimizer.init_args.lr", "0.01"])
    _assert_lora_checkpoint("critic")
    trained = load_module(Path("runs/arith/critic/checkpoints/last.ckpt"))
    b_weights = [p for name, p in trained.model.named_parameters() if "lora_B" in name]
    assert max(float(p.abs().max()) for p in b_weights) > 0  # B starts at zero: the adapters trained

    cli_main(["export", "--ckpt", "runs/arith/critic/checkpoints/last.ckpt", "--out", "runs/arith/critic_hf"])
    exported = load_file("runs/arith/critic_hf/model.safetensors")
    assert not any("lora" in k or "base_layer" in k for k in exported)
    ids = torch.tensor([[5, 17, 42, 9, 33, 8]])
    merged = ValueModel.from_pretrained("runs/arith/critic_hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), trained.model.eval()(ids), atol=1e-4, rtol=1e-4)

    cli_main([*ACTOR, *lora])
    _assert_lora_checkpoint("actor")
    cli_main(["export", "--ckpt", "runs/arith/actor/checkpoints/last.ckpt", "--out", "runs/arith/actor_hf"])
    actor = load_module(Path("runs/arith/actor/checkpoints/last.ckpt")).model.eval()
    policy = AutoModelForCausalLM.from_pretrained("runs/arith/actor_hf").eval()
    assert type(policy).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(policy(ids).logits, actor(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
