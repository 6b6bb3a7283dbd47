"""Atomic writes: a folder or a small JSON file is always whole, old or new, whatever kills the writer.

Every stage writes its output through `staged_dir` (a temp sibling, then one rename), so a kill or an error never
leaves a half-written artifact, and a rerun finds either the previous version or nothing. `move_aside` keeps an
outdated artifact for inspection instead of deleting it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """A fresh temp sibling of `out` to write a folder into; when the block ends without error it replaces `out`
    (`replace_dir`), and it is removed whatever happens, so a kill or an error never leaves a half-written `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Move the finished folder `src` to `dst` so that `dst` always names a whole folder, old or new.

    An existing `dst` is swapped with `src` in one atomic exchange (Linux renameat2), then the old folder is
    deleted. Where the filesystem cannot exchange, the old folder is first renamed aside; a kill between that rename
    and the next leaves it there, and `recover_moved_aside` (run by every later write and read) puts it back."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if _exchange(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # `src` now holds the old folder
        return
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (renameat2 with RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0  # EINVAL / ENOSYS: a filesystem or kernel without exchange; the caller falls back


def recover_moved_aside(path: Path) -> None:
    """Put back a folder `replace_dir`'s fallback had moved aside when a kill left `path` missing."""
    if path.exists():
        return
    folders = [p for p in path.parent.glob(f".{path.name}.old-*") if p.is_dir()]  # replace_dir moves folders
    aside = sorted(folders, key=lambda p: p.stat().st_mtime)
    if aside:
        os.replace(aside[-1], path)
        log.warning("%s was missing after an interrupted write; restored the previous version", path)


def clear_leftovers(path: Path) -> None:
    """Remove the temp siblings (`.name.tmp-*`, `.name.old-*`) killed writes of `path` left behind, after
    `recover_moved_aside`. One writer per artifact at a time: a concurrent writer's temp folder would go too."""
    recover_moved_aside(path)
    for leftover in [*path.parent.glob(f".{path.name}.tmp-*"), *path.parent.glob(f".{path.name}.old-*")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):  # temp files of killed writes
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object per line atomically (temp file, then rename): a kill leaves the old file or the new
    one, never half a file. Returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def move_aside(path: Path, why: str) -> Path:
    """Rename an outdated artifact to `<path>.stale-<time>` (kept for inspection, never deleted) and say so."""
    aside = path.with_name(f"{path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    os.replace(path, aside)
    log.warning("%s %s; moved it to %s", path, why, aside)
    return aside
