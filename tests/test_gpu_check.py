"""benchmarks/gpu_check.py in its CPU smoke mode (every part on a tiny model), and its report of missing packages."""

from __future__ import annotations

import re

from benchmarks import gpu_check


def test_cpu_mode_runs_every_part_and_prints_one_row_each(tmp_path, capsys):
    assert gpu_check.main(["--cpu", "--work", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for part in gpu_check.PARTS:
        row = re.search(rf"^\| {re.escape(part.name)} \| ok \| (\d+\.\d) \| (.+) \|$", printed, re.MULTILINE)
        assert row, f"no ok row for {part.name}"
        assert float(row.group(1)) >= 0 and re.search(r"\d", row.group(2))
    assert re.search(
        r"HFGenerator [\d,]+ tok/s; plain generate [\d,]+ tok/s; HFGenerator, cascade [\d,]+ tok/s", printed
    )
    assert re.search(r"HFGenerator / plain generate \d+\.\d\dx; HFGenerator / HFGenerator, cascade \d+\.\d\dx", printed)
    assert "MFU n/a (CPU)" in printed and re.search(r"^\| total \| \| \d+\.\d \| \|$", printed, re.MULTILINE)
    assert (tmp_path / "fsdp" / "actor" / "hf" / "config.json").is_file()  # the FSDP fit exported its model


def test_a_missing_package_is_named_and_its_parts_are_skipped_with_the_reason(monkeypatch, tmp_path, capsys):
    real = gpu_check.find_spec
    monkeypatch.setattr(gpu_check, "find_spec", lambda name: None if name == "datasets" else real(name))
    assert gpu_check.main(["--cpu", "--work", str(tmp_path)]) == 0  # nothing that could run failed
    printed = capsys.readouterr().out
    assert re.search(r"^  datasets +pip: datasets +for dapo's on-disk records", printed, re.MULTILINE)
    assert "pip download -d wheels" in printed and "pip install --no-index --find-links wheels 'datasets'" in printed
    assert "| model | skipped | - | missing datasets (or pass --model DIR) |" in printed
    assert "| training MFU | skipped | - | needs model |" in printed  # the tiny model is built by dapo (datasets)


def test_the_time_budget_stops_new_parts_and_names_them(tmp_path, capsys):
    assert gpu_check.main(["--cpu", "--work", str(tmp_path), "--budget-s", "0"]) == 0
    printed = capsys.readouterr().out
    assert "| model | skipped | - | time budget of 0 s spent" in printed
    assert printed.count("| skipped |") == len(gpu_check.PARTS)
