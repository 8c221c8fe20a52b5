"""Heads shipped inside the package, and how a head argument (``"auto"``, ``"none"``, a folder,
a ``.pth`` file or a loaded head) becomes a head."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ner_retriever.models.encoder import EncoderConfig
from ner_retriever.models.head import ProjectionHead
from ner_retriever.models.loading import PACKAGED_MODELS


def resolve_head(head: ProjectionHead | str | Path | None,
                 config: EncoderConfig) -> ProjectionHead | None:
    """``"auto"``: the head shipped for these encoder settings, if any; ``None``/``"none"``:
    raw vectors; a folder or ``.pth``: that head."""
    if isinstance(head, str) and head in ("auto", "none"):
        return packaged_head(config) if head == "auto" else None
    if isinstance(head, (str, Path)):
        return ProjectionHead.load(head)
    return head


def packaged_head(config: EncoderConfig) -> ProjectionHead | None:
    """The trained head shipped in the package for exactly these encoder settings, if any."""
    if config.model not in PACKAGED_MODELS:  # heads ship only for the packaged aliases
        return None
    folder = resources.files("ner_retriever") / "data" / "heads" / config.model
    if not folder.is_dir():
        return None
    with resources.as_file(folder) as path:
        head = ProjectionHead.load(path)
    cfg = head.config
    wanted = (config.model, config.block, tuple(config.extra_blocks or ()), config.component,
              config.query_template)
    have = (cfg.model, cfg.block, tuple(cfg.extra_blocks or ()), cfg.component,
            cfg.query_template)
    return head if have == wanted else None
