"""The tiny Llama + byte-level BPE builder: exact round-trips, honest offsets, offline loading, determinism."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from dapo.models import build_tiny_model, train_bpe_tokenizer
from dapo.models.tiny import count_parameters

CORPUS = [
    f"Question: Tom has {a} apples and buys {b} more. How many apples?\nStep 1: {a} + {b} = {a + b}.\n"
    f"Answer: \\boxed{{{a + b}}}\n\n"
    for a in range(12)
    for b in range(1, 6)
] + ["The café → résumé costs 3 €.\n", "    indented code\n\tand a tab\n"]

STRINGS = [
    "Step 1: 2 + 3 = 5.",
    "  two leading spaces",
    "a\n\n\nthree newlines\n",
    "The café → résumé",
    "unseen: 日本語 🙂 ñ ß ∑\r\n\ttab",
    " ",
    "",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


BYTE_OF_CHAR = {c: b for b, c in _bytes_to_unicode().items()}


def _token_bytes(tokenizer, token_id: int) -> bytes:
    return bytes(BYTE_OF_CHAR[c] for c in tokenizer.convert_ids_to_tokens(token_id))


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def loaded(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@pytest.mark.parametrize("text", STRINGS)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None


def test_special_tokens(tokenizer):
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    special = set(tokenizer.all_special_ids)
    for text in STRINGS:
        ids = tokenizer(text)["input_ids"]
        assert not special & set(ids)
        assert tokenizer(text, add_special_tokens=True)["input_ids"] == ids


def test_merges_were_learned(tokenizer):
    assert 259 < len(tokenizer) <= 400
    assert len(tokenizer(CORPUS[0])["input_ids"]) < len(CORPUS[0].encode())


def _char_of_byte(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) for _ in ch.encode()]


@pytest.mark.parametrize("text", STRINGS)
def test_offsets_slice_the_original_text(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    raws = [_token_bytes(tokenizer, i) for i in ids]
    assert b"".join(raws) == text.encode()
    char_of_byte, byte_pos = _char_of_byte(text), 0
    for token_id, raw, (start, end) in zip(ids, raws, offsets, strict=True):
        # Offsets are character offsets covering exactly the characters this token's bytes belong to.
        assert (start, end) == (char_of_byte[byte_pos], char_of_byte[byte_pos + len(raw) - 1] + 1)
        byte_pos += len(raw)
        try:
            whole = raw.decode()
        except UnicodeDecodeError:  # holds part of a multi-byte character, e.g. " " + first byte of "→"
            assert raw in text[start:end].encode()
            continue
        assert text[start:end] == whole == tokenizer.decode([token_id])


def test_ascii_offsets_tile_the_text_and_keep_leading_spaces(tokenizer):
    text = "Question: Tom has 3 apples\n\n  Answer: 7"
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(offsets))
    pieces = [text[s:e] for s, e in offsets]
    assert "".join(pieces) == text
    assert " Tom" in pieces  # the leading space stays inside the token's span (no trim_offsets)


def test_folder_loads_offline_and_matches(model_dir, loaded, tokenizer):
    model, tok = loaded
    files = set(os.listdir(model_dir))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    assert model.config.vocab_size == len(tok) == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for text in STRINGS:
        assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert tok.decode(tok(text)["input_ids"]) == text


def test_forward_batch_logits_shape(loaded):
    model, tok = loaded
    batch = tok(["Step 1: 2 + 3 = 5.", "The café → résumé costs 3 €."], padding=True, return_tensors="pt")
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_token_id).all()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


class _EosForRowZero(LogitsProcessor):
    """Row 0 must end at once; row 1 may never end, so the batch runs the full budget and row 0 gets padded."""

    def __init__(self, eos: int, special: list[int]) -> None:
        self.eos, self.special = eos, special

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        scores[0, :] = -float("inf")
        scores[0, self.eos] = 0.0
        scores[1, self.special] = -float("inf")
        return scores


def test_generate_stops_and_pads_with_tokenizer_ids(loaded):
    model, tok = loaded
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (
        tok.eos_token_id,
        tok.pad_token_id,
    )
    prompts = tok(["Question: Tom has 3 apples", "Step 1:"], padding=True, padding_side="left", return_tensors="pt")
    width = prompts["input_ids"].shape[1]
    processor = _EosForRowZero(tok.eos_token_id, tok.all_special_ids)
    with torch.no_grad():
        plain = model.generate(**prompts, max_new_tokens=5, do_sample=False)
        forced = model.generate(
            **prompts, max_new_tokens=5, do_sample=False, logits_processor=LogitsProcessorList([processor])
        )
    assert plain.shape[0] == 2 and width < plain.shape[1] <= width + 5
    assert forced[0, width:].tolist() == [tok.eos_token_id] + [tok.pad_token_id] * 4
    assert not set(forced[1, width:].tolist()) & set(tok.all_special_ids)


def test_weights_are_deterministic_in_the_seed(tmp_path, model_dir):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    same = build_tiny_model(tmp_path / "same", CORPUS, vocab_size=400)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's RNG stream is untouched
    other = build_tiny_model(tmp_path / "other", CORPUS, vocab_size=400, seed=1)
    reference = load_file(model_dir / "model.safetensors")
    same_w, other_w = load_file(same / "model.safetensors"), load_file(other / "model.safetensors")
    assert reference.keys() == same_w.keys() == other_w.keys()
    assert all(torch.equal(reference[k], same_w[k]) for k in reference)
    assert not torch.equal(reference["model.embed_tokens.weight"], other_w["model.embed_tokens.weight"])
    assert (same / "tokenizer.json").read_text() == (model_dir / "tokenizer.json").read_text()


def test_existing_folder_needs_overwrite(tmp_path):
    out = build_tiny_model(tmp_path / "m", CORPUS, vocab_size=300)
    before = load_file(out / "model.safetensors")["model.embed_tokens.weight"]
    with pytest.raises(FileExistsError):
        build_tiny_model(out, CORPUS, vocab_size=300)
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "not_a_model", CORPUS)
    build_tiny_model(out, CORPUS, vocab_size=300, seed=7, overwrite=True)
    after = load_file(out / "model.safetensors")["model.embed_tokens.weight"]
    assert not torch.equal(before, after)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "not_a_model"]


def test_untied_model_and_parameter_count(tmp_path):
    kwargs = {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2}
    tied = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "tied", CORPUS, **kwargs))
    untied_dir = build_tiny_model(tmp_path / "untied", CORPUS, tie_word_embeddings=False, **kwargs)
    untied = AutoModelForCausalLM.from_pretrained(untied_dir)
    assert untied.config.intermediate_size == 4 * 32
    assert count_parameters(untied) - count_parameters(tied) == len(AutoTokenizer.from_pretrained(untied_dir)) * 32
    untied.model.embed_tokens.weight.requires_grad_(False)
    assert count_parameters(untied, trainable_only=True) == count_parameters(tied)


def test_bad_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(ValueError, match="heads"):
        build_tiny_model(tmp_path / "m", CORPUS, hidden_size=30, num_heads=4)
    assert not (tmp_path / "m").exists()
