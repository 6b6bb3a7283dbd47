"""Kill-during-write: an artifact the pipeline keeps is replaced whole, so a SIGKILL at any moment leaves the old
version or the new one, never a half-written one, and never none once one existed.

For each kind of artifact (a records dataset, a small JSON file, a Lightning checkpoint, a Hugging Face export) a
writer process overwrites ONE path in a loop, alternating two versions that differ in size and content, and the
test SIGKILLs it after a random delay, checks that the path loads as exactly one of the two versions, and starts a
new writer, several times over. Junk siblings like those a killed writer leaves (names starting with ".") are
planted first: they must not stop anything from loading or writing.

The writers are forked by one long-lived child (`sys.executable -c ...`, importing this module once): torch,
transformers and datasets take seconds to import, and a fresh interpreter per kill would spend the test importing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import torch
from lightning.fabric.utilities.cloud_io import _atomic_save
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dapo.callbacks.checkpoints import publish
from dapo.models import train_bpe_tokenizer
from dapo.models.tiny import MIN_VOCAB_SIZE
from dapo.records import Provenance, read_provenance, read_records, staged_dir, write_json, write_records

VERSIONS = ("A", "B")
ROWS = {"A": 2000, "B": 3000}  # versions differ in size, so a torn write cannot pass for either
KILLS = 8  # per kind of artifact
MAX_DELAY = 0.3  # seconds between a writer's first finished write and its kill: several writes' worth
REPLY_TIMEOUT = 180.0  # a hung child fails the test instead of hanging it (not a speed requirement)
Write = Callable[[Path, str], None]


def _other(version: str) -> str:
    return VERSIONS[1 - VERSIONS.index(version)]


def _checked_version(version: object) -> str:
    assert version in VERSIONS, f"unknown version {version!r}"
    return str(version)


# -- the four kinds of artifact: how a writer writes each version, and how the test reads one back ----------------


def _problem_rows(version: str) -> list[dict[str, str]]:
    return [
        {"id": f"{version}-{i}", "task": "atomic", "prompt": f"{version} {i}", "answer": "", "example": "{}"}
        for i in range(ROWS[version])
    ]


def _records_writer() -> Write:
    """`write_records`, as every stage writes its dataset; the provenance names the version too."""
    rows = {version: _problem_rows(version) for version in VERSIONS}

    def write(path: Path, version: str) -> None:
        write_records(rows[version], path, "problems", Provenance(producer="test_atomic", config={"version": version}))

    return write


def _read_records(path: Path) -> str:
    ids = read_records(path, "problems")["id"]
    version = _checked_version(ids[0].split("-")[0])
    assert ids == [row["id"] for row in _problem_rows(version)]
    assert read_provenance(path).config == {"version": version}  # data and provenance from the same write
    return version


def _json_data(version: str) -> dict[str, object]:
    """About 1 MB: long strings serialise fast, so much of a write is spent writing the file (the risky part)."""
    return {"version": version, "rows": [f"{version}-{i}-" + "x" * 400 for i in range(ROWS[version])]}


def _json_writer() -> Write:
    """`write_json`, as summaries and run records are written."""
    data = {version: _json_data(version) for version in VERSIONS}
    return lambda path, version: write_json(path, data[version])


def _read_json(path: Path) -> str:
    data = json.loads(path.read_text())
    version = _checked_version(data["version"])
    assert data == _json_data(version)
    return version


def _checkpoint(version: str) -> dict[str, object]:
    """A few MB of weights whose length and value both tell the version."""
    weight = torch.full((500 * ROWS[version],), float(1 + VERSIONS.index(version)))
    return {"version": version, "state_dict": {"weight": weight}}


def _checkpoint_writer() -> Write:
    """As `StepCheckpoint` saves every `.ckpt`: Lightning's `_atomic_save` (TorchCheckpointIO) into a hidden sibling,
    then `publish` renames it over the checkpoint."""
    checkpoints = {version: _checkpoint(version) for version in VERSIONS}

    def write(path: Path, version: str) -> None:
        staged = path.with_name(f".{path.name}.tmp-1")
        _atomic_save(checkpoints[version], staged)
        publish(staged, path)

    return write


def _read_checkpoint(path: Path) -> str:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    version = _checked_version(checkpoint["version"])
    assert torch.equal(checkpoint["state_dict"]["weight"], _checkpoint(version)["state_dict"]["weight"])
    return version


def _fill(version: str) -> float:
    return 0.25 * (1 + VERSIONS.index(version))


def _tiny_llama(version: str, vocab_size: int) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 Llama whose every weight is `_fill(version)` and whose config names the version."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    config.dapo_version = version
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(_fill(version))
    return model


def _export_writer() -> Write:
    """A Hugging Face folder (model + tokenizer) written the way `dapo export` and `run_fit` write one: the module's
    `save_hf` (`save_pretrained` of model and tokenizer) into a staged sibling that replaces the folder."""
    tokenizer = train_bpe_tokenizer(["12 + 34 = 46\n"], vocab_size=MIN_VOCAB_SIZE)  # the smallest byte-level BPE
    models = {version: _tiny_llama(version, len(tokenizer)) for version in VERSIONS}

    def write(path: Path, version: str) -> None:
        with staged_dir(path) as tmp:
            models[version].save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))

    return write


def _read_export(path: Path) -> str:
    model = AutoModelForCausalLM.from_pretrained(str(path))
    version = _checked_version(model.config.dapo_version)
    assert all(bool((parameter == _fill(version)).all()) for parameter in model.parameters())
    assert len(AutoTokenizer.from_pretrained(str(path))) == model.config.vocab_size
    return version


@dataclass(frozen=True)
class Artifact:
    name: str
    """The artifact's file or folder name."""
    writer: Callable[[], Write]
    """Runs in the writer process: builds both versions once and returns `write(path, version)`."""
    read: Callable[[Path], str]
    """Loads the artifact at a path and returns its version; fails unless it is wholly one version."""


ARTIFACTS = {
    "records": Artifact("problems", _records_writer, _read_records),
    "json": Artifact("summary.json", _json_writer, _read_json),
    "checkpoint": Artifact("last.ckpt", _checkpoint_writer, _read_checkpoint),
    "export": Artifact("hf", _export_writer, _read_export),
}


# -- the child: a long-lived process that forks one writer per kill ------------------------------------------------


def serve() -> None:
    """Child main: for each "KIND PATH FIRST" line on stdin, fork a writer and report how it ended."""
    while line := sys.stdin.readline():
        kind, path, first = line.split()
        pid = os.fork()
        if pid == 0:
            _write_forever(ARTIFACTS[kind], Path(path), first)
        _, status = os.waitpid(pid, 0)
        print(f"ended {os.waitstatus_to_exitcode(status)}", flush=True)


def _write_forever(artifact: Artifact, path: Path, first: str) -> NoReturn:
    """Writer main: write `first`, say so, then alternate versions until killed; an error exits with status 1."""
    try:
        write = artifact.writer()
        write(path, first)
        print(f"writing {os.getpid()}", flush=True)
        for version in itertools.cycle((_other(first), first)):
            write(path, version)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def _other_filesystem_tmp(workdir: Path) -> str:
    """A temp folder on another filesystem than `workdir` (/dev/shm where it is a tmpfs), else one inside it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != workdir.stat().st_dev:
        folder = shm / f"dapo-test-atomic-{os.getpid()}"
        folder.mkdir(exist_ok=True)
        return str(folder)
    (workdir / "tmp").mkdir(exist_ok=True)
    return str(workdir / "tmp")


class Child:
    """The parent's handle on the child: start a writer, kill it, read the child's replies with a timeout."""

    def __init__(self, workdir: Path) -> None:
        # TMPDIR: where Lightning's `_atomic_save` stages a checkpoint before moving it in; across filesystems fsspec
        # copies into place, which is why StepCheckpoint has it write a hidden sibling that it renames itself. A
        # separate filesystem (a tmpfs) where there is one, so the test would see a torn copy.
        self.log = workdir / "child.log"
        self.tmp = _other_filesystem_tmp(workdir)
        env = os.environ | {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",  # 2 cores; and forking after an OpenMP pool has started is unsafe
            "TMPDIR": self.tmp,
        }
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_atomic; test_atomic.serve()"
        )
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,  # its own process group, writers included: `close` ends them all
            )
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read_replies, daemon=True).start()

    def _read_replies(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.replies.put(line.decode().strip())
        self.replies.put("closed")

    def reply(self, word: str) -> str:
        """The child's next reply, which must start with `word`."""
        try:
            line = self.replies.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            line = "no reply"
        assert line.startswith(word), f"expected {word!r} from the child, got {line!r}; its log:\n{self.errors()}"
        return line

    def errors(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def start_writer(self, kind: str, path: Path, first: str) -> int:
        """Fork a writer of `kind` at `path`; return its pid once its first write (of version `first`) is done."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{kind} {path} {first}\n".encode())
        self.process.stdin.flush()
        return int(self.reply("writing").split()[1])

    def kill_writer(self, pid: int) -> None:
        """SIGKILL the writer and check that the kill is what ended it (not an error of its own)."""
        with contextlib.suppress(ProcessLookupError):  # it had already ended: the reply below says how
            os.kill(pid, signal.SIGKILL)
        line = self.reply("ended")
        assert line == f"ended {-signal.SIGKILL}", f"the writer ended on its own ({line}); its log:\n{self.errors()}"

    def close(self) -> None:
        """End the child and any writer still running (a test that failed midway leaves one)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)  # killed saves leave their staged copies there


@pytest.fixture(scope="module")
def child(tmp_path_factory) -> Iterator[Child]:
    child = Child(tmp_path_factory.mktemp("atomic-child"))
    yield child
    child.close()


def _plant_junk(path: Path) -> list[Path]:
    """Siblings of `path` like those a writer killed mid-write leaves: a half-written staging folder, a folder moved
    aside, a half-written temp file."""
    staged, aside, partial = (
        path.with_name(f".{path.name}.{suffix}") for suffix in ("tmp-deadbeef", "old-c0ffee00", "tmp")
    )
    for folder in (staged, aside):
        folder.mkdir(parents=True)
        (folder / "data-00000-of-00001.arrow").write_bytes(b"\x00half an arrow file")
        (folder / "config.json").write_text('{"trunc')
    partial.write_bytes(b'{"version": "A", "rows": [0, 1, 2')
    return [staged, aside, partial]


@pytest.mark.parametrize("kind", list(ARTIFACTS))
def test_a_kill_leaves_the_old_or_the_new_artifact(kind: str, child: Child, tmp_path: Path) -> None:
    artifact = ARTIFACTS[kind]
    path = tmp_path / artifact.name
    junk = _plant_junk(path)
    rng = random.Random(f"test_atomic-{kind}")  # random kill moments, the same ones every run
    on_disk: str | None = None
    for _ in range(KILLS):
        first = "B" if on_disk == "A" else "A"  # every writer replaces the version it finds at least once
        pid = child.start_writer(kind, path, first)
        time.sleep(rng.uniform(0.0, MAX_DELAY))
        child.kill_writer(pid)
        on_disk = artifact.read(path)  # exists (it did before the kill), loads, and is wholly A or B
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [path.name]
    assert all(p.name.startswith(f".{path.name}.") for p in tmp_path.iterdir() if p != path)  # only temp siblings
    if kind in ("records", "export"):  # folder writers clear what killed writes left, junk included
        assert not any(p.exists() for p in junk[:2])


# -- replace_dir's fallback where renameat2 cannot exchange: two renames, repaired afterwards -------------------

_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from dapo.records import atomic

rename = os.replace

def rename_then_die(src, dst):
    rename(src, dst)
    if ".old-" in Path(dst).name:  # the old folder has just been moved aside; the new one is not in yet
        os.kill(os.getpid(), signal.SIGKILL)

atomic._exchange = lambda a, b: False  # a filesystem without RENAME_EXCHANGE
os.replace = rename_then_die
atomic.replace_dir(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_kill_between_the_fallbacks_two_renames_is_repaired_by_the_next_read(tmp_path: Path) -> None:
    from dapo.records import recover_moved_aside

    old, new = tmp_path / "out", tmp_path / ".out.tmp-12345678"
    for folder, version in ((old, "A"), (new, "B")):
        folder.mkdir()
        (folder / "version").write_text(version)
    died = subprocess.run([sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(new), str(old)], timeout=REPLY_TIMEOUT)
    assert died.returncode == -signal.SIGKILL and not old.exists()  # the window the exchange closes
    recover_moved_aside(old)  # what read_records, write_records and staged_dir do first
    assert (old / "version").read_text() == "A"


def test_replace_dir_swaps_in_one_step(tmp_path: Path) -> None:
    """With renameat2 (this machine), no rename ever leaves the path empty: os.replace is not called at all."""
    from dapo.records import atomic

    old, new = tmp_path / "out", tmp_path / ".out.tmp-1"
    for folder, version in ((old, "A"), (new, "B")):
        folder.mkdir()
        (folder / "version").write_text(version)
    calls = []
    real = os.replace
    os.replace = lambda *args: calls.append(args) or real(*args)  # type: ignore[assignment]
    try:
        atomic.replace_dir(new, old)
    finally:
        os.replace = real
    assert calls == [] and (old / "version").read_text() == "B" and sorted(tmp_path.iterdir()) == [old]


# -- writers that now stage their output ---------------------------------------------------------------------------


def test_an_evaluation_result_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    from dapo.pipeline.evaluate import _write_outputs
    from dapo.stages.evaluation import EvalResult

    out = tmp_path / "eval"
    result = EvalResult("arith", "test", [[1.0]], 0.5, ["p0"], [["4"]], ["2 + 2 ="])
    _write_outputs(out, {"accuracy": 1.0}, result)
    unserialisable = EvalResult("arith", "test", [[0.0]], 0.5, ["p0"], [[object()]], ["2 + 2 ="])
    with pytest.raises(TypeError):
        _write_outputs(out, {"accuracy": 0.0}, unserialisable)
    assert json.loads((out / "summary.json").read_text()) == {"accuracy": 1.0}
    assert json.loads((out / "examples.jsonl").read_text())["responses"] == ["4"]
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # the failed write's staging folder is gone


def test_the_demos_fallback_baseline_is_a_whole_copy_of_the_start_policy(tmp_path: Path, monkeypatch) -> None:
    from dapo.pipeline import demo_grid

    policy, out = tmp_path / "policy", tmp_path / "baseline"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    (out / "hf").mkdir(parents=True)
    (out / "hf" / "model.safetensors").write_bytes(b"half a model, from a killed run")
    monkeypatch.setattr(demo_grid, "correct_solutions", lambda stage_a_dir: [])  # nothing to imitate: copy the policy
    round_ = demo_grid.Round(tmp_path / "iter-01", policy, {})
    demo_grid._fit_rft(round_, 1e-4, 7, out, demo_grid.TuningGrid(), seed=0)
    assert sorted(p.name for p in (out / "hf").iterdir()) == ["config.json"]  # replaced, not merged into
    assert json.loads((out / "tokens.json").read_text())["tokens"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["hf", "tokens.json"]


def test_a_tiny_model_folder_gets_the_usual_permissions(tmp_path: Path) -> None:
    from dapo.models import build_tiny_model

    out = build_tiny_model(tmp_path / "m", ["1 + 2 = 3\n"], vocab_size=MIN_VOCAB_SIZE, hidden_size=8, num_heads=2)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a tempfile.mkdtemp folder renamed in would stay 0700
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
