"""Step boundaries found on the full tokenization, including when BPE merges across a boundary."""

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from dapo.core.alignment import last_token_indices, token_span, tokenize_trajectory


@pytest.fixture
def crossing_tokenizer():
    """Character BPE without pre-tokenization whose merge "\\n"+"b" crosses a step boundary."""
    vocab = {"Q": 0, ":": 1, "a": 2, "b": 3, "\n": 4, "Q:": 5, "\nb": 6, "<eos>": 7}
    merges = [("Q", ":"), ("\n", "b")]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=merges)))
    tok.eos_token = "<eos>"
    return tok


def test_merge_across_boundary(crossing_tokenizer):
    # "Q:a\nb" -> ["Q:", "a", "\nb"]: the newline ending step 1 shares a token with step 2.
    ids, boundaries = tokenize_trajectory(crossing_tokenizer, "Q:", ["a\n", "b"])
    assert ids == [5, 2, 6]
    # s_0 = "Q:" ends in token 0; s_1 = "Q:a\n" ends inside token 2 (its last char "\n" is there); s_2 = all.
    assert boundaries == [0, 2, 2]


def test_no_merge_across_boundary(crossing_tokenizer):
    # "Q:a\na" -> ["Q:", "a", "\n", "a"]: every boundary is a token's end.
    ids, boundaries = tokenize_trajectory(crossing_tokenizer, "Q:", ["a\n", "a"])
    assert ids == [5, 2, 4, 2]
    assert boundaries == [0, 2, 3]


def test_last_token_indices_skip_special_tokens():
    # token 0 is a BOS with empty offsets; tokens 1.. cover "ab|cd|e"
    offsets = [(0, 0), (0, 2), (2, 4), (4, 5), (0, 0)]
    assert last_token_indices(offsets, [1, 2, 3, 4, 5]) == [1, 1, 2, 2, 3]
    with pytest.raises(ValueError):
        last_token_indices(offsets, [0])


def test_token_span():
    offsets = [(0, 0), (0, 2), (2, 4), (4, 5)]
    assert token_span(offsets, 2, 5) == (2, 4)  # "cde" is tokens 2..3
    assert token_span(offsets, 3, 5) == (2, 4)  # starts inside token 2: it holds a character of the span
    assert token_span(offsets, 4, 5) == (3, 4)
    with pytest.raises(ValueError):
        token_span(offsets, 5, 5)


def test_empty_prompt_or_step_rejected(crossing_tokenizer):
    with pytest.raises(ValueError, match="empty prompt"):
        tokenize_trajectory(crossing_tokenizer, "", ["a"])
    with pytest.raises(ValueError, match="empty step"):
        tokenize_trajectory(crossing_tokenizer, "Q:", ["a\n", ""])
