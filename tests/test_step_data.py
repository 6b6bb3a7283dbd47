"""StepDataModule over real records and a real tokenizer, in both modes."""

from __future__ import annotations

import pytest
import torch
from builders import reference_action_rows, reference_state_rows
from transformers import AutoTokenizer

from dapo.data_modules import StepDataModule
from dapo.records import Provenance, RecordError, write_records


def _states(arith, n: int) -> list[dict]:
    """Every state of the reference solution of `n` problems, with made-up soft values (t + 1) / (T + 2)."""
    return reference_state_rows(arith, n, lambda t, T: (t + 1) / (T + 2))


def _actions(arith, n: int) -> list[dict]:
    return reference_action_rows(arith, n)  # a repeated candidate is kept


def _module(tmp_path, kind: str, rows: list[dict], tokenizer: str, **kwargs) -> StepDataModule:
    path = write_records(rows, tmp_path / (kind if rows else "empty"), kind, Provenance(producer="test"))
    mode = "critic" if kind == "states" else "actor"
    dm = StepDataModule(mode=mode, train_path=str(path), tokenizer=tokenizer, **kwargs)
    dm.load_items()
    return dm


def test_critic_batches_hold_targets_at_step_ends(tmp_path, arith, tiny_model_dir):
    dm = _module(tmp_path, "states", _states(arith, 20), tiny_model_dir, max_tokens=256)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batches = list(dm.train_dataloader())
    assert sum(b["input_ids"].shape[0] for b in batches) == 20
    for batch in batches:
        assert batch["input_ids"].numel() <= 256 or batch["input_ids"].shape[0] == 1
        for row in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][row].sum())
            ids = batch["input_ids"][row, :n].tolist()
            ends = batch["boundary_index"][row][batch["boundary_mask"][row]].tolist()
            text = tok.decode(ids)
            assert tok.decode(ids[: ends[0] + 1]) == text[: text.index("Solution:\n") + len("Solution:\n")]
            assert ends[-1] == n - 1  # the last state is the whole solution
            assert tok.decode(ids[ends[1] + 1 : ends[2] + 1]).endswith("\n")
            targets = batch["targets"][row][batch["target_mask"][row]]
            assert torch.allclose(targets, torch.tensor([1 / 5, 2 / 5, 3 / 5, 4 / 5]))  # 3 steps + prompt


def _action_tokens(batch: dict, action: int) -> list[int]:
    """Token ids of one action of a packed actor batch."""
    row, segment = batch["action_row"][action], batch["action_segment"][action]
    return batch["input_ids"][row][batch["segment_ids"][row] == segment].tolist()


def test_actor_batches_keep_a_states_actions_together(tmp_path, arith, tiny_model_dir):
    dm = _module(tmp_path, "actions", _actions(arith, 10), tiny_model_dir, max_tokens=200)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    states = 0
    for batch in dm.train_dataloader():
        counts = torch.bincount(batch["action_state"])
        assert (counts == 3).all()  # all three candidates of every state are in the batch
        assert batch["input_ids"].shape[0] == counts.numel()  # one packed row per state
        assert batch["input_ids"].numel() <= 200 or batch["input_ids"].shape[0] == 1
        assert tok.decode(_action_tokens(batch, 1)) == "9 + 9 = 18\n"
        prefix = batch["input_ids"][0][batch["segment_ids"][0] == 0].tolist()
        state = tok.decode(prefix)  # prompt + the first step, once
        assert state.startswith("Question:") and state.count("\n") == 3 and state.endswith("\n"), state
        assert torch.allclose(batch["ref_logprobs"][:3], torch.tensor([-1.0, -2.0, -3.0]))
        states += counts.numel()
    assert states == 10


def test_terminal_action_ends_with_eos(tmp_path, arith, tiny_model_dir):
    rows = _actions(arith, 1)
    rows[0]["is_terminal"] = True
    rows[2] = {**rows[2], "action": "", "is_terminal": True}  # stopping at once: the eos alone
    dm = _module(tmp_path, "actions", rows, tiny_model_dir)
    batch = next(iter(dm.train_dataloader()))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert _action_tokens(batch, 0)[-1] == tok.eos_token_id
    assert _action_tokens(batch, 1)[-1] != tok.eos_token_id
    assert _action_tokens(batch, 2) == [tok.eos_token_id]
    assert batch["target_ids"][batch["token_action"] == 2].tolist() == [tok.eos_token_id]


def test_overlong_raises_or_is_counted(tmp_path, arith, tiny_model_dir, caplog):
    rows = _states(arith, 3)
    with pytest.raises(RecordError, match=r"solution 'arith-train-\d+/s0' has \d+ tokens, over max_length=8"):
        _module(tmp_path / "a", "states", rows, tiny_model_dir, max_length=8)
    with pytest.raises(ValueError, match="no usable train items out of 12 records"):
        _module(tmp_path / "b", "states", rows, tiny_model_dir, max_length=8, strict=False)
    assert "skipped 3 train groups: {'too long': 3}" in caplog.text


def test_inconsistent_states_rejected(tmp_path, arith, tiny_model_dir):
    rows = _states(arith, 1)
    rows[1]["t"] = 0  # two states claim t=0
    with pytest.raises(RecordError, match=r"state t=0 is out of range 0\.\.3 or repeated"):
        _module(tmp_path, "states", rows, tiny_model_dir)


def test_val_fraction_holds_out_whole_problems(tmp_path, arith, tiny_model_dir):
    dm = _module(tmp_path, "states", _states(arith, 40), tiny_model_dir, val_fraction=0.25)
    assert len(dm.train_items) + len(dm.val_items) == 40
    assert 0 < len(dm.val_items) < 20
    assert sum(b["input_ids"].shape[0] for b in dm.val_dataloader()) == len(dm.val_items)


def test_no_training_records_is_an_error(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match=r"no actions records to train on in .*empty"):
        _module(tmp_path, "actions", [], tiny_model_dir)


def test_a_sample_cut_off_inside_its_first_step_trains_the_critic(tmp_path, arith, tiny_model_dir):
    """Stage A keeps such a sample as a solution with no steps whose prompt state has rollouts; the module reads
    the records (not just the dicts critic_items sees), so it must keep the column that tells it from an empty
    response."""
    rows = _states(arith, 2)
    cut = {**rows[0], "solution_id": "cut", "state_id": "cut/t0", "t": 0, "steps": [], "mc_value": 0.25}
    dm = _module(tmp_path, "states", [*rows, cut], tiny_model_dir)
    assert len(dm.train_items) == 3
    (item,) = [item for item in dm.train_items if item["key"] == "cut"]
    assert item["targets"] == [0.25] and item["target_mask"] == [True]
    finished = {**cut, "n_rollouts": 0}  # a finished response with no steps is empty: refused
    with pytest.raises(RecordError, match="an empty response"):
        _module(tmp_path / "empty", "states", [*rows, finished], tiny_model_dir)
