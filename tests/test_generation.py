"""HFGenerator: shared-prefix == plain decoding, determinism, one-step stopping and cutting, token counting.

A random tiny model mostly repeats one token and rarely emits a newline or end-of-sequence, so the session tiny
model is first trained for a few seconds on arith solutions: it then writes arith-looking lines, newlines and eos,
which exercises stopping, padding after eos and step cutting. A second, untrained tiny model with another seed
and shape checks the prefix sharing on a different architecture size.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from dapo.core.padding import left_pad
from dapo.core.steps import first_step, split_steps, state_text
from dapo.generation.hf_generator import FirstStepStopping, HFGenerator, count_new_tokens, cut_to_first_step
from dapo.generation.protocol import SamplingParams, is_truncated
from dapo.models import build_tiny_model

TRAIN_STEPS = 60


def _train(model, tokenizer, texts: list[str]) -> None:
    """A few AdamW steps of language modelling on `texts` (each followed by eos), seeded, in place."""
    enc = tokenizer([t + tokenizer.eos_token for t in texts], return_tensors="pt", padding=True)  # (N, L)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)  # (N, L)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(TRAIN_STEPS):
            idx = torch.randint(0, len(texts), (32,))  # (32,)
            loss = model(input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def trained(tiny_model_dir, arith):
    """(model, tokenizer): the session tiny model after a few seconds of training on arith solutions."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = arith.load("train")
    _train(model, tokenizer, [arith.prompt(ex) + arith.reference_solution(ex) for ex in examples])
    return model, tokenizer


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, arith):
    """(model, tokenizer): another random tiny model (seed 1, hidden 48, 3 layers)."""
    texts = [arith.prompt(ex) + arith.reference_solution(ex) for ex in arith.load("train")]
    path = tmp_path_factory.mktemp("models") / "tiny-b"
    build_tiny_model(path, texts, vocab_size=320, hidden_size=48, num_layers=3, num_heads=2, seed=1)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def prompts(arith) -> list[str]:
    """States of arith test problems (prompt + first t steps) and a short prompt: all of different lengths."""
    examples = arith.load("test")
    states = []
    for t, ex in enumerate(examples[:4]):
        steps = split_steps(arith.reference_solution(ex))
        states.append(state_text(arith.prompt(ex), steps, min(t, len(steps))))
    return [*states, "Question:"]


def _pair(model, tokenizer, batch_size: int) -> tuple[HFGenerator, HFGenerator]:
    shared = HFGenerator(model, tokenizer, batch_size=batch_size, shared_prefix=True)
    return shared, HFGenerator(model, tokenizer, batch_size=batch_size, shared_prefix=False)


# -- pure helpers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("5 + 3 = 8", None),
        ("\n\n  \n", None),
        ("5 + 3 = 8\n", "5 + 3 = 8\n"),
        ("5 + 3 = 8\n8 * 2", "5 + 3 = 8\n"),
        ("5 + 3 = 8\n\n\n", "5 + 3 = 8\n"),
        ("\n \n5 + 3 = 8\nAnswer: 8", "\n \n5 + 3 = 8\n"),
    ],
)
def test_first_step_cases(text, expected):
    assert first_step(text) == expected
    assert cut_to_first_step(text) == (text if expected is None else expected)


def test_first_step_other_delimiter():
    assert first_step("a ## b ##", "##") == "a ##"
    assert first_step("  ##a", "##") is None
    with pytest.raises(ValueError):
        first_step("a\n", "")


@given(st.text(alphabet="ab \t\n#", max_size=40), st.sampled_from(["\n", "##"]))
def test_first_step_agrees_with_split_steps(text, delimiter):
    step = first_step(text, delimiter)
    if step is None:  # no step is complete: at most one (unterminated) step
        assert len(split_steps(text, delimiter)) <= 1
        return
    assert text.startswith(step)
    assert split_steps(step, delimiter) == [step]
    # the first step of the full text, unless only blank lines follow (they then join the last step)
    assert split_steps(text, delimiter)[0] in (step, text)


@given(st.lists(st.text(alphabet="ab \n", min_size=1, max_size=8), min_size=2, max_size=5))
def test_first_step_of_a_multi_step_response(pieces):
    steps = split_steps("".join(pieces))
    if len(steps) >= 2:
        assert first_step("".join(steps)) == steps[0]


def test_left_pad_and_count():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert count_new_tokens(torch.tensor([[4, 1, 2], [2, 2, 2]]), pad_id=2) == 2


def test_stopping_criterion_per_row(trained):
    _, tokenizer = trained
    prompt = tokenizer("Solution:\n").input_ids
    news = ["5 + 3", "5 + 3 = 8\n", "\n\n", "\n\n4 * 2 = 8\nAns"]
    rows = [tokenizer(text).input_ids for text in news]
    width = max(map(len, rows))
    # padding goes between prompt and new tokens: it decodes to nothing, and the last token stays a real one
    ids = torch.tensor([prompt + [tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])  # (4, p + w)
    done = FirstStepStopping(tokenizer, len(prompt))(ids, None)
    assert done.dtype == torch.bool
    assert done.tolist() == [False, True, False, True]


def test_stopping_criterion_token_by_token(trained):
    _, tokenizer = trained
    prompt = tokenizer("Q\n").input_ids
    new = tokenizer("\n3 * 2 = 6\nAnswer: 6").input_ids
    criterion = FirstStepStopping(tokenizer, len(prompt))
    for t in range(1, len(new) + 1):
        done = bool(criterion(torch.tensor([prompt + new[:t]]), None)[0])
        assert done == (first_step(tokenizer.decode(new[:t])) is not None)
    assert done


# -- generation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["trained", "untrained"])
@pytest.mark.parametrize("one_step", [False, True])
def test_greedy_shared_prefix_equals_plain(request, prompts, which, one_step):
    model, tokenizer = request.getfixturevalue(which)
    assert len({len(tokenizer(p).input_ids) for p in prompts}) == len(prompts)  # left padding matters
    shared, plain = _pair(model, tokenizer, batch_size=6)  # 2 prompts x 3 rollouts per chunk: 3 chunks
    params = SamplingParams(n=3, temperature=0.0, max_new_tokens=24, one_step=one_step)
    out = shared.generate(prompts, params)
    assert out == plain.generate(prompts, params)
    assert [len(texts) for texts in out] == [3] * len(prompts)
    assert shared.tokens_generated == plain.tokens_generated > 0


def test_greedy_copies_identical_and_independent_of_batch(trained, prompts):
    generator = HFGenerator(*trained, batch_size=64)
    params = SamplingParams(n=3, temperature=0.0, max_new_tokens=24)
    batched = generator.generate(prompts, params)
    assert all(len(set(texts)) == 1 for texts in batched)
    assert batched == [generator.generate([p], params)[0] for p in prompts]
    assert any("\n" in texts[0] for texts in batched)  # the trained model writes lines


def test_one_step_is_the_first_step_of_the_full_continuation(trained, prompts):
    shared, plain = _pair(*trained, batch_size=8)
    full = shared.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=48))
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=48, one_step=True)
    for generator in (shared, plain):
        before = generator.tokens_generated
        one = generator.generate(prompts, params)
        assert one == [[cut_to_first_step(texts[0])] * 2 for texts in full]
        assert generator.tokens_generated - before < len(prompts) * 2 * 48  # stopped early
    assert sum(first_step(texts[0]) is not None for texts in one) >= 3


def test_sampled_one_step_has_at_most_one_step(trained, prompts):
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=32, one_step=True, seed=3)
    out = HFGenerator(*trained, batch_size=8).generate(prompts, params)
    texts = [text for group in out for text in group]
    assert all(len(split_steps(text)) <= 1 for text in texts)
    complete = [text for text in texts if text.endswith("\n")]
    assert len(complete) >= 3  # the trained model finishes lines, and the cut leaves exactly one step
    assert all(first_step(text) == text for text in complete)


def test_sampling_is_seeded_and_leaves_global_rng_alone(trained, prompts):
    shared, plain = _pair(*trained, batch_size=8)
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_new_tokens=24, seed=7)
    rng_state = torch.get_rng_state()
    first = shared.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert shared.generate(prompts, params) == first
    assert shared.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=8)) != first
    assert len({text for texts in first for text in texts}) > 1
    other = plain.generate(prompts, params)  # may differ from `first`: only check it is well formed
    assert len(other) == len(prompts) and all(len(texts) == 4 for texts in other)
    assert all(isinstance(text, str) for texts in other for text in texts)


def test_tokens_generated_counts_non_pad_new_tokens(trained, prompts):
    model, tokenizer = trained
    generator = HFGenerator(model, tokenizer, batch_size=64)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=40)
    out = generator.generate(prompts, params)
    # reference: one plain `generate` call, padded by the tokenizer itself
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")  # (b, s)
    with torch.inference_mode():
        ref = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = ref[:, enc.input_ids.shape[1] :]  # (b, t)
    assert generator.tokens_generated == 2 * count_new_tokens(new, tokenizer.pad_token_id)
    assert [texts[0] for texts in out] == tokenizer.batch_decode(new, skip_special_tokens=True)
    assert (new == tokenizer.eos_token_id).any()  # some rows ended early, so padding was really excluded
    before = generator.tokens_generated
    generator.generate(prompts[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=5))
    assert 0 < generator.tokens_generated - before <= 5


def test_state_is_restored_and_inputs_are_checked(trained, prompts):
    model, tokenizer = trained
    generator = HFGenerator(model, tokenizer, batch_size=4)
    side = tokenizer.padding_side
    assert generator.generate([], SamplingParams()) == []
    model.train()
    try:
        generator.generate(prompts[:2], SamplingParams(n=5, temperature=0.0, max_new_tokens=4))  # n > batch_size
        assert model.training and tokenizer.padding_side == side
    finally:
        model.eval()
    with pytest.raises(TypeError):
        generator.generate("a prompt", SamplingParams())
    with pytest.raises(ValueError):
        generator.generate([""], SamplingParams())
    with pytest.raises(ValueError):
        HFGenerator(model, tokenizer, batch_size=0)


def test_from_pretrained(tiny_model_dir):
    generator = HFGenerator.from_pretrained(tiny_model_dir, batch_size=8, shared_prefix=False)
    assert generator.batch_size == 8 and not generator.shared_prefix
    out = generator.generate(["Question: Tom"], SamplingParams(n=2, temperature=0.0, max_new_tokens=3))
    assert len(out) == 1 and len(out[0]) == 2 and generator.tokens_generated == 6


def test_gpu_decoding_keeps_sdpa_off_cudnn_and_only_inside_generate(trained, monkeypatch):
    """cuDNN's SDPA builds a plan per shape, and decoding makes a new shape every token (docs/performance.md)."""
    from dapo.generation import hf_generator

    with hf_generator.decode_attention(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored on leaving
    with hf_generator.decode_attention(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled()  # nothing to change off the GPU
    seen = []
    real = hf_generator.decode_attention
    monkeypatch.setattr(hf_generator, "decode_attention", lambda device: seen.append(device) or real(device))
    model, tokenizer = trained
    HFGenerator(model, tokenizer).generate(["1 + 1"], SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
    assert seen == [torch.device("cpu")]  # the generator's own device decides


def test_count_tokens_counts_a_continuations_tokens_without_special_ones(trained, prompts):
    """What a cut-off continuation spent of its budget: its `max_new_tokens`, re-encoded from its text."""
    model, tokenizer = trained
    generator = HFGenerator(model, tokenizer)
    out = generator.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=6))
    cut = [row[0] for row in out if is_truncated(row[0])]
    assert cut and generator.count_tokens(cut) == [6] * len(cut)
    assert generator.count_tokens([]) == [] and generator.count_tokens([""]) == [0]
