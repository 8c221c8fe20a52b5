"""The one content-keyed cache: arrays stored under a digest of what they are made of (data
content, spans, model file, settings), so a rerun skips the language model and a change never
hits stale vectors. Writes are atomic (a temporary file renamed into place), so a crash or a
concurrent writer never leaves a half-written array.

Evaluation vectors live in ``<cache>/eval/<digest>/<name>.npy`` (:class:`VectorCache`);
training mention sets in ``<cache>/mentions/<readable name>-<digest>.npz`` (:func:`atomic_savez`)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError

CACHE_VERSION = "2"  # 2: data files keyed by content, not time stamp
DIGEST_CHARS = 16  # hex characters of the sha256 kept in folder names
TMP_BITS = 32  # random bits in a temporary file's name


def digest(obj, length: int = DIGEST_CHARS) -> str:
    """Short sha256 of ``obj`` as sorted JSON: equal keys give equal names, across runs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


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


def default_cache_root() -> Path:
    """The cache folder (``NER_RETRIEVER_CACHE`` overrides)."""
    from ner_retriever.models.loading import cache_dir

    return cache_dir()


def _temporary(path: Path) -> Path:
    """A sibling name no other writer picks; it keeps the suffix numpy would otherwise append."""
    return path.with_name(f".{path.stem}.{random.getrandbits(TMP_BITS):08x}{path.suffix}")


def atomic_save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` (a ``.npy``) through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    np.save(tmp, np.ascontiguousarray(array))
    tmp.replace(path)


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` (a ``.npz``) through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    np.savez(tmp, **arrays)
    tmp.replace(path)


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
        atomic_save(path, array)
