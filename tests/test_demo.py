"""`dapo demo` shortened end to end: every artifact, a well-formed report, TensorBoard logs, and a rerun that
resumes instead of retraining. (Accuracies are not asserted: a few seconds of training decide nothing.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dapo.cli import cli_main
from dapo.records import read_records

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SFT_STEPS = 200
SHORT = {
    # one-step additions of small numbers, so that a tiny policy trained for seconds already solves some
    "task": {"n_steps": 1, "ops": "+-", "train_size": 100, "test_size": 8},
    "start": {"hidden_size": 64, "num_layers": 2, "sft_steps": SFT_STEPS, "batch_size": 32},
    "evaluation": {"limit": 8, "max_new_tokens": 16},
    "grid": {"lrs": [1e-4], "epochs": [1, 2], "validation": 16},
    "rounds": 2,
}
METHODS = ("dapo", "response", "rft")


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _check_policy_entry(entry: dict) -> None:
    low, high = entry["ci95"]
    assert 0.0 <= low <= entry["accuracy"] <= high <= 1.0
    assert (Path(entry["path"]) / "config.json").is_file()


@pytest.mark.slow
def test_shortened_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("configs").symlink_to(CONFIGS)
    Path("short.yaml").write_text(yaml.safe_dump(SHORT))
    args = ["demo", "--config", "short.yaml", "--out", "out", "--seed", "1", "--fit_overlays", "[configs/debug.yaml]"]
    cli_main(args)
    out = Path("out")

    round_dir = out / "iterate" / "iter-01"
    for artifact in (
        "policy/model.safetensors",
        "iterate/iter-01/stage_a/summary.json",
        "iterate/iter-01/critic/hf/README.md",  # the exported critic's model card
        "iterate/iter-01/stage_b/summary.json",
        "iterate/iter-01/actor/hf/model.safetensors",
        "grid/response/actions/provenance.json",
        "grid/validation.json",
        "round-2/iter-01/stage_a/summary.json",
        "round-2/iter-01/actor/hf/model.safetensors",
        "timings.json",
    ):
        assert (out / artifact).is_file(), artifact

    problems = read_records(out / "problems", "problems")  # Stage A graded and wrote the demo's task, under `out`
    assert {len(json.loads(example)["operations"]) for example in problems["example"]} == {1}

    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "arith" and report["test_problems"] == 8 and report["seed"] == 1
    grid = report["grid"]
    for name in ("start", *METHODS):
        _check_policy_entry(report[name])
    for method in METHODS:  # every point trained and scored on validation; the best one is the method's policy
        scores = grid["scores"][method]
        assert list(scores) == ["lr0.0001-ep1", "lr0.0001-ep2"] and all(0.0 <= s <= 1.0 for s in scores.values())
        chosen = report[method]["chosen"]
        assert scores[chosen] == max(scores.values()) and report[method]["validation"] == scores[chosen]
        own = round_dir / "actor" / "hf"  # the point `dapo iterate` trained is not trained twice
        assert Path(report[method]["path"]) in (out / "grid" / method / chosen / "hf", own)
    # round 2 started from round 1's chosen DAPO policy, its critic from round 1's
    second = json.loads((out / "round-2" / "iter-01" / "iteration.json").read_text())
    assert second["policy_path"] == report["dapo"]["path"]
    assert second["critic_init"] == str(round_dir / "critic" / "hf")
    _check_policy_entry(report["dapo_round2"])
    assert report["dapo_round2"]["validation"] == grid["scores"]["dapo_round2"]["-"]
    for key, (before, after) in {
        "dapo_minus_start": ("start", "dapo"),
        "response_minus_start": ("start", "response"),
        "rft_minus_start": ("start", "rft"),
        "dapo_minus_response": ("response", "dapo"),
        "dapo_minus_rft": ("rft", "dapo"),
        "dapo_round2_minus_dapo": ("dapo", "dapo_round2"),
        "dapo_round2_minus_start": ("start", "dapo_round2"),
        "dapo_round2_minus_response": ("response", "dapo_round2"),
        "dapo_round2_minus_rft": ("rft", "dapo_round2"),
    }.items():
        diff = report[key]["difference"]
        assert diff == pytest.approx(report[after]["accuracy"] - report[before]["accuracy"])
        assert report[key]["ci95"][0] <= diff <= report[key]["ci95"][1]
    for method in ("response", "rft"):  # the baselines train for the DAPO actor's tokens (whole steps, so about)
        tokens = [json.loads((out / "grid" / method / p / "tokens.json").read_text())["tokens"] for p in scores]
        assert tokens[0] >= 0.5 * grid["dapo_epoch_tokens"] and tokens[1] > tokens[0], (method, tokens)
    stages = ["start_policy", "stage_a", "critic", "stage_b", "actor", "grid_dapo", "grid_response", "grid_rft"]
    stages += ["round_2", "evaluation"]
    assert list(report["stages"]) == stages and all(s >= 0 for s in report["stages"].values())
    assert report["seconds"] == pytest.approx(sum(report["stages"].values()))

    printed = capsys.readouterr().out
    lines = ["start policy", "RFT baseline", "response-level baseline", "DAPO (step-level)", "DAPO - RFT", "total"]
    for line in [*lines, "DAPO, round 2", "DAPO round 2 - DAPO"]:
        assert line in printed, line

    start_logs = _scalars(out / "tb" / "start_policy")
    assert len(start_logs["sft/loss"]) == SFT_STEPS and start_logs["eval/accuracy"] == [report["start"]["accuracy"]]
    assert _scalars(out / "tb" / "dapo")["eval/accuracy"] == [pytest.approx(report["dapo"]["accuracy"])]
    assert len(_scalars(out / "tb" / "rft")["grid/validation_accuracy"]) == 2
    assert "sft/loss" in _scalars(out / "grid" / "rft" / "lr0.0001-ep1" / "tb")
    critic_logs = _scalars(next((round_dir / "critic" / "tb").glob("version_*")))
    assert "val/outcome_ece" in critic_logs and 0.0 <= critic_logs["stage_a/solve_rate"][0] <= 1.0
    assert len(critic_logs["stage_a/mc_value_by_step"]) >= 2  # one point per step t, from t = 0
    actor_logs = _scalars(next((round_dir / "actor" / "tb").glob("version_*")))
    assert "train/sign_agreement" in actor_logs and 0.0 < actor_logs["stage_b/share_states_kept"][0] <= 1.0

    # a rerun trains nothing again: same weights on disk, same recorded stage times, same accuracies
    weights = [
        out / "policy/model.safetensors",
        out / "grid/rft/lr0.0001-ep2/hf/model.safetensors",
        out / "grid/response/lr0.0001-ep1/hf/model.safetensors",
        round_dir / "actor/hf/model.safetensors",
        out / "round-2/iter-01/actor/hf/model.safetensors",
    ]
    mtimes = [p.stat().st_mtime_ns for p in weights]
    cli_main(args)
    assert [p.stat().st_mtime_ns for p in weights] == mtimes
    again = json.loads((out / "report.json").read_text())
    assert {k: again["stages"][k] for k in stages[:-1]} == {k: report["stages"][k] for k in stages[:-1]}
    names = ("start", *METHODS, "dapo_round2")
    assert [again[k]["accuracy"] for k in names] == [report[k]["accuracy"] for k in names]
    # resuming with other settings would silently reuse the old start policy and baseline: refused, in one line
    with pytest.raises(SystemExit):
        cli_main([*args[:6], "2", *args[7:]])
    message = capsys.readouterr().err
    assert "plan.seed, seed differ, see out/demo.json" in message and "use another --out" in message


def test_demo_names_a_missing_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("short.yaml").write_text(yaml.safe_dump(SHORT))
    with pytest.raises(FileNotFoundError, match=r"configs/demo/iterate\.yaml not found"):
        cli_main(["demo", "--config", "short.yaml", "--out", "out"])


@pytest.mark.slow
def test_real_model_recipe_in_miniature(tmp_path, monkeypatch, policy_dir):
    """configs/real/demo.yaml's code path (a pretrained model as the start's base, its own iterate, critic and actor
    configs) with a tiny base model (already fine-tuned on arith, so that it solves some problems) and a few
    problems: the start policy is the base fine-tuned, not a new model."""
    monkeypatch.chdir(tmp_path)
    Path("configs").symlink_to(CONFIGS)
    start = {"base_model": policy_dir, "sft_steps": SFT_STEPS, "batch_size": 32, "lr": 3e-3}
    short = {**SHORT, "start": start, "rounds": 1}
    short["grid"] = {"lrs": [1e-4], "epochs": [1], "validation": 16}
    Path("short.yaml").write_text(yaml.safe_dump(short))
    cli_main(["demo", "--config", "configs/real/demo.yaml", "--config", "short.yaml", "--out", "out"])
    out = Path("out")

    base, tuned = (json.loads(Path(p, "config.json").read_text()) for p in (policy_dir, out / "policy"))
    assert tuned["hidden_size"] == base["hidden_size"] and tuned["vocab_size"] == base["vocab_size"]
    assert not (out / ".policy.base").exists()  # no tiny model was built
    assert json.loads((out / "demo.json").read_text())["start"]["base_model"] == policy_dir
    critic = yaml.safe_load((CONFIGS / "real/critic.yaml").read_text())
    stage_a = json.loads((out / "iterate/iter-01/stage_a/summary.json").read_text())
    assert stage_a["problems"] == critic["stage_a"]["rollout"]["limit"]  # the real recipe's own Stage A settings
    report = json.loads((out / "report.json").read_text())
    assert report["test_problems"] == 8 and set(report["grid"]["chosen"]) == set(METHODS)
    assert not list(out.glob("grid/*/*/checkpoints"))  # finished points keep their export only
    for name in ("start", *METHODS):
        _check_policy_entry(report[name])


def test_real_recipe_names_a_missing_base_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("configs").symlink_to(CONFIGS)
    Path("short.yaml").write_text(yaml.safe_dump({key: SHORT[key] for key in ("task", "evaluation")}))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--config", "configs/real/demo.yaml", "--config", "short.yaml", "--out", "out"])
    assert exit_info.value.code != 0
    message = capsys.readouterr().err
    assert "start.base_model runs/real/smollm2 does not exist" in message and "dapo import-gguf" in message
    assert not Path("out/policy").exists()  # refused before training anything
