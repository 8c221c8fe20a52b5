"""What ``ner-retriever info`` prints: counts and settings of an index, without any model (so
``info`` is instant and imports no torch)."""

from __future__ import annotations

from ner_retriever.indexes.index import Index


def index_info(index: Index) -> dict:
    cfg = index.config
    recorded = cfg.model_dump()  # plain JSON values: what ``info --json`` prints
    size = sum(f.stat().st_size for f in index.path.rglob("*") if f.is_file())
    return {
        "path": str(index.path),
        "documents": len(index),
        "mentions": index.num_mentions(),
        "model": cfg.encoder.model,
        "block": cfg.encoder.block,
        "extra_blocks": list(cfg.encoder.extra_blocks or []),  # concatenated after ``block``
        "component": cfg.encoder.component,
        "head": recorded["head"],
        "detector": recorded["detector"],
        "store": cfg.store,
        "hybrid": recorded["dense"],
        "dim": cfg.dim,
        "created": cfg.created,
        "size_bytes": size,
        "config": recorded,
    }
