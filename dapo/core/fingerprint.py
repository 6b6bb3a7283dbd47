"""A model folder's identity: a hash of its config and weights, recorded in every dataset's provenance so a stage
can tell whether its inputs were made by the model it is about to use."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def policy_fingerprint(path: str) -> str:
    """First 16 hex digits of a sha256 over a model folder's config.json and *.safetensors (names, sizes, bytes).

    Reading multi-GB weights takes a while, so the result is cached per file list, sizes and modification times."""
    folder = Path(path)
    config = folder / "config.json"
    weights = sorted(folder.glob("*.safetensors"))
    if not config.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    if not weights:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights to fingerprint")
    files = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in [config, *weights])
    return _fingerprint(files)


@functools.lru_cache(maxsize=64)
def _fingerprint(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        file = Path(name)
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
