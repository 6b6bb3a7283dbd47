"""Memory switches: gradient checkpointing (same loss and gradients, lower peak), the attention kernel (same values,
clear errors), QLoRA with checkpointing; and the planner's memory estimate against measured peaks."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

from benchmarks.memory_plan import Case, actor_batch, critic_batch, measure, plan_case, random_llama
from dapo.generation.hf_generator import HFGenerator
from dapo.models import build_tiny_model
from dapo.models.adapters import LoraSettings
from dapo.stages.candidate_advantages import AdvantageConfig
from dapo.training.actor import ActorModule
from dapo.training.critic import CriticModule

MODULES = {"critic": CriticModule, "actor": ActorModule}


def _module(kind: str, path: str, **kwargs: Any) -> Any:
    module = MODULES[kind](path, **kwargs)
    module.configure_model()
    return module


def _backbone(module: Any) -> Any:
    """The transformers model inside a critic (its backbone) or an actor (its causal LM)."""
    return module.model.backbone if isinstance(module, CriticModule) else module.model


def _batch(kind: str, vocab: int, sequence: int = 64, rows: int = 2) -> dict[str, Any]:
    """A critic batch (trajectories) or an actor batch (packed rows with a 4D mask) for a model of `vocab`."""
    case = Case(kind, 0, 0, vocab, sequence, rows, False)
    return critic_batch(case) if kind == "critic" else actor_batch(case)


def _loss_and_grads(module: Any, batch: dict[str, Any]) -> tuple[float, dict[str, torch.Tensor]]:
    loss = module.training_step(batch, 0)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["critic", "actor"])
@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, dropout=0.1)], ids=["full", "lora"])
def test_checkpointing_gives_the_same_loss_and_gradients(kind, lora, tiny_model_dir):
    """The same step with and without checkpointing (the actor's on packed rows, 4D mask; LoRA with dropout, which
    the recomputation must replay): equal losses and gradients (max abs difference <= 1e-5)."""
    vocab = _backbone(_module(kind, tiny_model_dir)).config.vocab_size
    batch = _batch(kind, vocab)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # same LoRA init, same dropout masks
        module = _module(kind, tiny_model_dir, gradient_checkpointing=checkpointing, lora=lora)
        assert _backbone(module).is_gradient_checkpointing == checkpointing
        torch.manual_seed(1)
        results.append(_loss_and_grads(module, batch))
    (loss_off, grads_off), (loss_on, grads_on) = results
    assert loss_on == pytest.approx(loss_off, abs=1e-6)
    assert grads_on.keys() == grads_off.keys()
    assert max((grads_on[n] - grads_off[n]).abs().max().item() for n in grads_off) <= 1e-5


@pytest.mark.parametrize("kind", ["critic", "actor"])
def test_checkpointing_lowers_the_peak_and_the_planner_predicts_it(kind, tmp_path):
    """A model whose activations dominate (hidden 256, 8 layers, one row of 512 tokens): the measured peak of a
    training step (child process, as benchmarks/common.py measures) is lower with checkpointing, and the planner's
    peak is within 25% of the measured one either way."""
    measured = {}
    for checkpointing in (False, True):
        case = Case(kind, 256, 8, 512, 512, 1, checkpointing)
        path = random_llama(tmp_path, case)
        measured[checkpointing] = measure(case, path)["total"]
        planned = plan_case(case, path).peak / 2**20
        assert 0.75 <= planned / measured[checkpointing] <= 1.25, (case.label, planned, measured[checkpointing])
    assert measured[True] < 0.8 * measured[False]


@pytest.mark.parametrize("kind", ["critic", "actor"])
def test_eager_and_sdpa_attention_agree(kind, tiny_model_dir):
    """Critic values and actor log-probs (packed, 4D mask) from the eager kernel equal sdpa's within 1e-4."""
    outputs = []
    for attention in ("sdpa", "eager"):
        torch.manual_seed(0)  # the critic's new value head
        module = _module(kind, tiny_model_dir, attn_implementation=attention).eval()
        assert _backbone(module).config._attn_implementation == attention
        batch = _batch(kind, _backbone(module).config.vocab_size)
        with torch.no_grad():
            outputs.append(module.boundary_logits(batch) if kind == "critic" else module.action_logprobs(batch))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=0)


def test_inference_loaders_take_the_attention_kernel(tiny_model_dir, critic_dir):
    generator = HFGenerator.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert generator.model.config._attn_implementation == "eager"
    from dapo.models.value import StepScorer

    scorer = StepScorer.from_pretrained(critic_dir, attn_implementation="eager")
    assert scorer.model.backbone.config._attn_implementation == "eager"


def test_unknown_attention_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="attn_implementation must be one of 'sdpa', 'eager'"):
        CriticModule(tiny_model_dir, attn_implementation="fast")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        ActorModule(tiny_model_dir, attn_implementation="flash")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        AdvantageConfig(attn_implementation="sdpa_paged")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        HFGenerator.from_pretrained(tiny_model_dir, attn_implementation="bogus")


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_its_package_names_the_package(tiny_model_dir):
    module = ActorModule(tiny_model_dir, attn_implementation="flash_attention_2")
    with pytest.raises(ImportError, match="needs the package 'flash-attn'"):
        module.configure_model()


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory, arith) -> str:
    """Hidden 64: bitsandbytes' CPU 4-bit kernels fail on the hidden-32 session model."""
    texts = [arith.prompt(ex) + arith.reference_solution(ex) for ex in arith.load("train")]
    return str(build_tiny_model(tmp_path_factory.mktemp("wide") / "model", texts, vocab_size=300, hidden_size=64))


@pytest.mark.parametrize("kind", ["critic", "actor"])
def test_qlora_with_checkpointing_trains_a_step(kind, wide_model):
    """4-bit nf4 base (bitsandbytes on CPU) prepared by peft for k-bit training, LoRA, checkpointing: one step gives
    a finite loss, gradients on the adapters only, and changes every trainable parameter."""
    pytest.importorskip("bitsandbytes")
    module = _module(kind, wide_model, lora=LoraSettings(r=4), load_in="4bit", gradient_checkpointing=True)
    assert _backbone(module).is_gradient_checkpointing
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("model.head") for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-2)
    loss, grads = _loss_and_grads(module, _batch(kind, _backbone(module).config.vocab_size))
    optimizer.step()
    assert torch.isfinite(torch.tensor(loss)) and all(torch.isfinite(g).all() for g in grads.values())
    assert all(not torch.equal(before[n], p) for n, p in trainable.items())
