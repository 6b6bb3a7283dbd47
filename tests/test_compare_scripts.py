"""The comparison scripts beside the demo: DAPO's rounds sweep splits one round's Stage A problems over the rounds,
and the picture puts every method of a run folder on one axis of generated tokens."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks import compare_picture, dapo_rounds, demo_runs
from benchmarks.demo_runs import DemoRun
from dapo.pipeline.demo_grid import TuningGrid
from dapo.pipeline.demo_record import StaleRun
from dapo.records import write_json


def _run(tmp_path, arith, problems: int = 384) -> DemoRun:
    return DemoRun(tmp_path, arith, TuningGrid(), 0, problems, 1000, {"test_problems": 4})


def test_each_round_samples_its_share_of_the_problems(tmp_path, arith):
    """Four rounds of a 384-problem Stage A: 96 problems a round, the next 96 each round (iterate's slices), so the
    four rounds see the 384 problems the demo's one round saw; the rest of the plan is the demo's."""
    plan = dapo_rounds.rounds_plan(_run(tmp_path, arith), 4, "configs/demo/iterate.yaml", [])
    assert plan["iterations"] == 4 and plan["problems_per_round"] == 96
    assert "limit" not in plan["stage_a"]["rollout"]  # the critic config's 384 stays the pool the slices come from
    assert plan["stage_a"]["rollout"]["problems_path"] == str(tmp_path / "problems")
    assert plan["critic_config"] == "configs/demo/critic.yaml" and plan["seed"] == 0


def test_rounds_that_do_not_split_the_problems_evenly_are_refused(tmp_path, arith):
    with pytest.raises(ValueError, match="do not split into 5 equal rounds"):
        dapo_rounds.rounds_plan(_run(tmp_path, arith), 5, "configs/demo/iterate.yaml", [])


def test_a_variant_can_walk_through_more_problems(tmp_path, arith):
    """--problems 624 over 8 rounds: 78 problems a round; validation still refuses a count that reaches it."""
    run = dapo_rounds.walked(_run(tmp_path, arith), 624)
    assert dapo_rounds.rounds_plan(run, 8, "configs/demo/iterate.yaml", [])["problems_per_round"] == 78
    assert dapo_rounds.walked(run, None) is run
    with pytest.raises(ValueError, match="must be positive"):
        dapo_rounds.walked(run, 0)


def test_rounds_made_from_other_settings_or_without_a_record_are_refused(tmp_path, arith, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "policy")
    run = _run(tmp_path, arith)
    (tmp_path / "rounds/r2/iter-01").mkdir(parents=True)  # rounds of an older dapo_rounds, which sliced no problems
    with pytest.raises(StaleRun, match=r"rounds/r2 finished without a provenance record \(rounds.json"):
        dapo_rounds.run_rounds(run, 2, "configs/demo/iterate.yaml", [])
    made = dapo_rounds.rounds_made(run, dapo_rounds.rounds_plan(run, 2, "configs/demo/iterate.yaml", []))
    (tmp_path / "rounds/v-r2").mkdir()
    write_json(tmp_path / "rounds/v-r2/rounds.json", made)
    overlay = tmp_path / "rollouts_only.yaml"
    overlay.write_text("advantages:\n  critic_weight: 0.0\n")
    with pytest.raises(StaleRun, match=r"plan.advantages differ"):
        dapo_rounds.run_rounds(run, 2, "configs/demo/iterate.yaml", [str(overlay)], variant="v")


def test_rounds_keys_and_names():
    assert demo_runs.rounds_key(2, None) == "2" and demo_runs.rounds_key(4, "rollouts_only") == "4 rollouts_only"
    assert demo_runs.rounds_label("2") == "DAPO, 2 rounds"
    assert demo_runs.rounds_label("4 rollouts_only") == "DAPO, 4 rounds (rollouts_only)"


def test_paired_differences_by_hand():
    """Mine right on problems 0 and 1 of 4, theirs on 0: +25 points."""
    paired = demo_runs.paired({"start": [1.0, 0.0, 0.0, 0.0]}, [1.0, 1.0, 0.0, 0.0])
    assert paired["start"]["difference"] == pytest.approx(0.25)


def test_the_picture_holds_every_method_found_in_the_run(tmp_path):
    entry = {"accuracy": 0.5}
    report = {"task": "arith", "seed": 0, "test_problems": 4, "start": entry, "dapo": entry, "response": entry}
    (tmp_path / "report.json").write_text(json.dumps(report | {"rft": entry}))
    summary = tmp_path / "iterate/iter-01/stage_a/summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"tokens_generated": 1000}))
    (tmp_path / "grpo").mkdir()
    grpo = {"grpo": {"accuracy": 0.75, "chosen_lr": 1e-4}, "runs": [{"lr": 1e-4, "tokens": 1010}]}
    (tmp_path / "grpo/report.json").write_text(json.dumps(grpo))
    (tmp_path / "rounds").mkdir()
    points = [{"round": 1, "tokens": 500, "accuracy": 0.25}, {"round": 2, "tokens": 990, "accuracy": 0.75}]
    (tmp_path / "rounds/report.json").write_text(json.dumps({"sweep": {"2": {"points": points}}}))
    series = compare_picture.comparison_points(tmp_path)
    assert list(series) == ["start policy", "DAPO, 1 round", "response-level", "RFT", "online GRPO", "DAPO, 2 rounds"]
    assert [p.tokens for p in series["DAPO, 2 rounds"]] == [
        0,
        500,
        990,
    ]  # from the start policy and series["online GRPO"][0].tokens == 1010
    out = compare_picture.main([str(tmp_path)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grpo["grpo"]["curve"] = [{"percent": 50, "tokens": 505, "accuracy": 0.5}, {"percent": 100, "tokens": 1009}]
    (tmp_path / "grpo/report.json").write_text(json.dumps(grpo))
    series = compare_picture.comparison_points(tmp_path)
    assert [(p.tokens, p.accuracy) for p in series["online GRPO"]] == [(0, 0.5), (505, 0.5), (1010, 0.75)]
    assert compare_picture.main([str(tmp_path)]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_seed_table_pairs_each_seed_and_intervals_over_seeds(tmp_path):
    """Two seeds of 4 problems. DAPO - GRPO: -25 points on s0 (1 problem), -75 on s1 (3): mean -50, se 25, t 12.706."""
    from benchmarks import compare_table

    for seed, dapo in (("s0", [1.0, 1.0, 1.0, 0.0]), ("s1", [1.0, 0.0, 0.0, 0.0])):
        run = tmp_path / seed
        (run / "grpo").mkdir(parents=True)
        scores = {"start": [0.0] * 4, "dapo": dapo, "response": [0.0] * 4, "rft": [0.0] * 4}
        (run / "report.json").write_text(json.dumps({"test_scores": scores}))
        (run / "grpo/report.json").write_text(json.dumps({"test_scores": [1.0] * 4}))
    table = compare_table.format_table([tmp_path / "s0", tmp_path / "s1"])
    row = next(line for line in table.splitlines() if line.startswith("| DAPO, 1 round - online GRPO"))
    assert (
        "-25.0 [" in row and "-75.0 [" in row and f"-50.0 [{-50 - 25 * 12.706:+.1f}, {-50 + 25 * 12.706:+.1f}]" in row
    )
    against_rft = compare_table.format_table([tmp_path / "s0", tmp_path / "s1"], bases=("rft",))
    assert "| DAPO, 1 round - RFT | +75.0 [" in against_rft and "| RFT - " not in against_rft


def test_fewer_tokens_pairs_each_grpo_snapshot_with_the_round_at_its_share(tmp_path):
    """GRPO at 25% and 50% of the budget beside 8 rounds after rounds 2 and 4; a 30% snapshot has no round and an
    unscored one is left out. Seed s0: DAPO right on 3 of 4 at round 2, GRPO on 1: +50 points."""
    from benchmarks import compare_table

    for seed, dapo_right in (("s0", 3), ("s1", 2)):
        run = tmp_path / seed
        (run / "grpo").mkdir(parents=True)
        (run / "rounds").mkdir()
        curve = [
            {"percent": p, "tokens": 100 * p, "accuracy": 0.25, "test_scores": [1.0, 0.0, 0.0, 0.0]}
            for p in (25, 30, 50)
        ] + [{"percent": 75, "tokens": 7500, "accuracy": 0.5}]
        (run / "grpo/report.json").write_text(json.dumps({"grpo": {"curve": curve}}))
        scores = [1.0] * dapo_right + [0.0] * (4 - dapo_right)
        points = [
            {"round": r, "tokens": 1240 * r, "accuracy": dapo_right / 4, "test_scores": scores} for r in range(1, 9)
        ]
        (run / "rounds/report.json").write_text(json.dumps({"sweep": {"8": {"points": points}}}))
    pairs = compare_table.fewer_tokens(tmp_path / "s0", "8")
    assert sorted(pairs) == [25, 50] and pairs[25]["dapo"]["round"] == 2 and pairs[50]["dapo"]["round"] == 4
    assert compare_table.fewer_tokens(tmp_path / "s0", "4 wide") == {}
    table = compare_table.format_fewer_tokens([tmp_path / "s0", tmp_path / "s1"])
    assert "| online GRPO at 25% | 25.0% (2K) | 25.0% (2K) | 25.0% |" in table
    assert "| DAPO, 8 rounds, round 2 | 75.0% (2K) | 50.0% (2K) | 62.5% |" in table
    difference = next(line for line in table.splitlines() if line.startswith("| DAPO - GRPO"))
    assert difference.startswith("| DAPO - GRPO | +50.0 [") and "| +37.5 [" in difference
