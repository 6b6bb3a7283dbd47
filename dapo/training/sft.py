"""Supervised fine-tuning on worked solutions: the warm start that turns a fresh model into a starting policy.

DAPO improves a policy that already writes solutions step by step; a randomly initialised tiny model writes
noise, so every sampled solution is wrong and Stage A has nothing to learn from. A few hundred steps of
next-token training on (prompt, solution) pairs teach it the format and part of the arithmetic. The loss covers
the solution and a closing eos (the prompt is context only). Plain PyTorch: this is a preparation step for
small models, not a training framework (use `dapo fit` for anything large).

    dapo tiny-model --out runs/arith/policy --sft_steps 300
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from dapo.core.padding import pad_id_of, pad_right, right_mask
from dapo.records import staged_dir

IGNORE = -100  # label of positions without a loss (prompt and padding)


def sft_rows(tokenizer: PreTrainedTokenizerBase, prompt: str, solution: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + solution + eos, and labels that are IGNORE on the prompt's tokens."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    ids = [*tokenizer(prompt + solution)["input_ids"], tokenizer.eos_token_id]
    shared = len(prompt_ids) if ids[: len(prompt_ids)] == prompt_ids else 0  # BPE merged across: train on all
    return ids, [IGNORE] * shared + ids[shared:]


def supervised_finetune(
    model_path: str | Path,
    out: str | Path,
    pairs: Sequence[tuple[str, str]],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Fine-tune the causal LM at `model_path` on (prompt, solution) pairs for `steps` AdamW steps; write the
    result (model + tokenizer) to `out` atomically. `out` may equal `model_path`. `on_step(step, loss)` is called
    after every step (e.g. to log the loss curve to TensorBoard)."""
    if steps < 1 or not pairs:
        raise ValueError(f"need steps >= 1 and at least one pair, got steps={steps} and {len(pairs)} pairs")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(str(model_path)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        rows = [sft_rows(tokenizer, prompt, solution) for prompt, solution in pairs]
        rng = random.Random(seed)
        pad = pad_id_of(tokenizer)
        for step in (bar := tqdm(range(1, steps + 1), desc="sft", unit="step", dynamic_ncols=True)):
            batch = [rows[i] for i in rng.sample(range(len(rows)), min(batch_size, len(rows)))]
            ids = [ids for ids, _ in batch]
            labels = pad_right([labels for _, labels in batch], IGNORE)  # (b, s)
            loss = model(input_ids=pad_right(ids, pad), attention_mask=right_mask(ids), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_step is not None:
                on_step(step, loss.item())
    out = Path(out)
    with staged_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out
