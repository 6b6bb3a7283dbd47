"""Records: schema checks that name the row and field, atomic writes, provenance, shards."""

import json

import pytest

from dapo.records import Provenance, RecordError, read_provenance, read_records, write_records


def _state(t: int, mc: float = 0.5, sid: str = "p0/s0") -> dict:
    return {
        "state_id": f"{sid}/t{t}",
        "problem_id": "p0",
        "solution_id": sid,
        "t": t,
        "prompt": "Q\n",
        "steps": ["1+1=2\n", "Answer: 2"],
        "mc_value": mc,
        "n_rollouts": 4,
        "completions": ["a", "b"],
        "completion_rewards": [1.0, 0.0],
    }


def test_round_trip_with_provenance(tmp_path):
    path = write_records(
        [_state(0, 0.7), _state(1)],
        tmp_path / "states",
        "states",
        Provenance(producer="test", seed=3, policy_path="/m"),
    )
    ds = read_records(path, "states")
    assert ds.num_rows == 2
    assert ds[0]["mc_value"] == pytest.approx(0.7)  # soft value stays soft
    assert ds[1]["steps"] == ["1+1=2\n", "Answer: 2"]
    prov = read_provenance(path)
    assert (prov.producer, prov.kind, prov.seed, prov.policy_path) == ("test", "states", 3, "/m")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mc_value", float("nan"), "row 1, field 'mc_value': value nan is not finite"),
        ("t", "1", "row 1, field 't': expected an integer"),
        ("steps", "1+1=2", "row 1, field 'steps': expected a list"),
        ("completions", ["a", 3], r"row 1, field 'completions'\[1\]: expected a string"),
    ],
)
def test_bad_rows_name_row_and_field(tmp_path, field, value, message):
    bad = _state(1)
    bad[field] = value
    with pytest.raises(RecordError, match=message):
        write_records([_state(0), bad], tmp_path / "s", "states", Provenance(producer="test"))
    assert not (tmp_path / "s").exists()


def test_missing_field(tmp_path):
    row = _state(0)
    del row["prompt"]
    with pytest.raises(RecordError, match=r"row 0: missing field\(s\) \['prompt'\]"):
        write_records([row], tmp_path / "s", "states", Provenance(producer="test"))


def test_overwrite_keeps_one_version(tmp_path):
    path = tmp_path / "s"
    write_records([_state(0)], path, "states", Provenance(producer="first"))
    write_records([_state(0), _state(1)], path, "states", Provenance(producer="second"))
    assert read_records(path, "states").num_rows == 2
    assert read_provenance(path).producer == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_shards_read_as_one(tmp_path):
    root = tmp_path / "states"
    write_records([_state(0, sid="a")], root / "shard-00000", "states", Provenance(producer="t"))
    write_records([_state(0, sid="b"), _state(1, sid="b")], root / "shard-00001", "states", Provenance(producer="t"))
    (root / ".shard-00002.tmp-dead").mkdir()  # a half-written shard from a killed run is ignored
    ds = read_records(root, "states")
    assert ds["solution_id"] == ["a", "b", "b"]


def test_wrong_kind_and_missing_path(tmp_path):
    path = write_records([_state(0)], tmp_path / "s", "states", Provenance(producer="t"))
    with pytest.raises(RecordError, match="not actions records"):
        read_records(path, "actions")
    with pytest.raises(FileNotFoundError, match="no states records"):
        read_records(tmp_path / "nope", "states")
    with pytest.raises(ValueError, match="unknown record kind"):
        read_records(path, "stuff")
    assert json.loads((path / "provenance.json").read_text())["kind"] == "states"
