"""Cached vectors of an evaluation, keyed by what they are made of (data content, spans,
model file, settings), so a rerun skips the language model and a change never hits stale
vectors: ``<cache>/eval/<digest>/<name>.npy``."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError

CACHE_VERSION = "2"  # 2: data files keyed by content, not time stamp


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]



def model_fingerprint(model: str) -> dict:
    """Name plus size/mtime of the model file, so a changed model never hits a stale cache."""
    from ner_retriever.models.loading import resolve_model

    try:
        location, gguf = resolve_model(model)
    except ConfigError:
        return {"model": model}
    path = Path(location) / (gguf or "config.json")
    if path.is_file():
        stat = path.stat()
        return {"model": model, "file": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    return {"model": model, "location": str(location)}



class VectorCache:
    """``<cache>/eval/<key>/<block>-<component>.npy``: all mentions of a set, stacked."""

    def __init__(self, root: Path | None, key: dict, check: str | None = None):
        self.key = {"v": CACHE_VERSION, **key}
        self.folder = None if root is None else Path(root) / "eval" / digest(self.key)
        self.check = check  # e.g. a digest of the spans: a mismatch means stale vectors

    def _valid(self) -> bool:
        marker = None if self.folder is None else self.folder / "check.txt"
        if self.check is None or marker is None or not marker.is_file():
            return True
        return marker.read_text().strip() == self.check

    def path(self, name: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}.npy"

    def load(self, name: str, rows: int) -> np.ndarray | None:
        path = self.path(name)
        if path is None or not path.is_file() or not self._valid():
            return None
        array = np.load(path, allow_pickle=False)
        return array if array.shape[0] == rows else None

    def save(self, name: str, array: np.ndarray) -> None:
        path = self.path(name)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "key.json").write_text(json.dumps(self.key, indent=2, default=str))
        if self.check is not None:
            marker = path.parent / "check.txt"
            if marker.is_file() and marker.read_text().strip() != self.check:
                for old in path.parent.glob("*.npy"):  # vectors of other spans: drop them
                    old.unlink()
            marker.write_text(self.check)
        tmp = path.with_name(f".{path.stem}.{random.getrandbits(32):08x}.npy")
        np.save(tmp, np.ascontiguousarray(array))
        tmp.replace(path)



def default_cache_root() -> Path:
    from ner_retriever.models.loading import cache_dir

    return cache_dir()
