"""Gold mentions with one frozen vector each, extracted from BIO/CoNLL files by the language
model once and cached as ``.npz`` under ``<cache>/mentions/`` (keyed by file content, model,
block, component, window settings and sentence sample), so training reruns skip the model."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.io.cache import CACHE_VERSION, atomic_savez, default_cache_root, digest
from ner_retriever.io.corpus import file_digest

MENTION_DIGEST_CHARS = 12  # hex characters of the key digest in a cache file's name
PROGRESS_SENTENCES = 512  # sentences encoded per progress step


@dataclass
class MentionSet:
    """Gold mentions of a corpus with one frozen vector each.

    ``docs[i]`` is the 0-based sentence (document) of mention ``i`` within this set, and
    ``n_docs`` counts every sentence in the set, including those without mentions."""

    vectors: np.ndarray  # (n, d) float32, raw (not normalised)
    labels: np.ndarray  # (n,) str, the gold tag without BIO prefix
    docs: np.ndarray  # (n,) int64
    n_docs: int
    texts: np.ndarray | None = None  # (n,) str, the mention text (for inspection)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def types(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def subset(self, mask: np.ndarray) -> MentionSet:
        return MentionSet(self.vectors[mask], self.labels[mask], self.docs[mask], self.n_docs,
                          None if self.texts is None else self.texts[mask])

    @staticmethod
    def concat(sets: Sequence[MentionSet]) -> MentionSet:
        """Join sets; document numbers are shifted so documents stay distinct."""
        if not sets:
            raise ConfigError("no mention sets to join")
        offsets = np.cumsum([0] + [s.n_docs for s in sets[:-1]])
        return MentionSet(
            np.concatenate([s.vectors for s in sets]).astype(np.float32),
            np.concatenate([s.labels for s in sets]),
            np.concatenate([s.docs + o for s, o in zip(sets, offsets)]),
            int(sum(s.n_docs for s in sets)),
            None if any(s.texts is None for s in sets) else np.concatenate([s.texts for s in sets]),
        )


def sample_documents(path: str | Path, max_sentences: int | None = None, seed: int = 0):
    """Read a CoNLL/BIO file; keep a seeded random sample of ``max_sentences`` (file order).

    The sample is ``random.Random(seed).sample(all_sentences, n)`` re-sorted into file order,
    the same convention as the evaluation's 5,000-sentence Few-NERD sample."""
    from ner_retriever.io.corpus import read_conll

    docs = list(read_conll(path))
    if not docs:
        raise CorpusError("holds no sentences", str(path))
    if max_sentences is not None and max_sentences < len(docs):
        keep = sorted(random.Random(seed).sample(range(len(docs)), max_sentences))
        docs = [docs[i] for i in keep]
    return docs


def mention_cache_file(path: Path, encoder_cfg, block: int, component: str,
                       max_sentences: int | None, seed: int) -> Path:
    """``<cache>/mentions/<file>-<model>-b<block>-<component>-<n>-s<seed>-<digest>.npz``."""
    key = {
        "v": CACHE_VERSION, "file": path.name, "sha256": file_digest(path),
        "model": encoder_cfg.model, "block": block,
        "component": component, "max_length": encoder_cfg.max_length,
        "overlap": encoder_cfg.overlap, "bos": encoder_cfg.prepend_bos,
        "n": max_sentences, "seed": seed}
    model = re.sub(r"[^A-Za-z0-9.-]+", "_", Path(encoder_cfg.model).name)
    n = "all" if max_sentences is None else str(max_sentences)
    name = f"{path.stem}-{model}-b{block}-{component}-{n}-s{seed}-" \
           f"{digest(key, MENTION_DIGEST_CHARS)}.npz"
    return default_cache_root() / "mentions" / name


def _save_npz(target: Path, ms: MentionSet) -> None:
    atomic_savez(target, vectors=ms.vectors, labels=ms.labels.astype(str), docs=ms.docs,
                 n_docs=np.int64(ms.n_docs), texts=ms.texts.astype(str))


def _load_npz(target: Path) -> MentionSet:
    with np.load(target, allow_pickle=False) as z:
        return MentionSet(z["vectors"].astype(np.float32), z["labels"], z["docs"].astype(np.int64),
                          int(z["n_docs"]), z["texts"])


def _gold(docs) -> tuple[list[str], list[int], list[str], list[list[tuple[int, int]]]]:
    """Labels, sentence numbers and texts of every gold mention, and each sentence's spans."""
    labels, doc_ids, texts, spans = [], [], [], []
    for i, d in enumerate(docs):
        spans.append([(s.start, s.end) for s in d.spans or ()])
        for s in d.spans or ():
            labels.append(s.label)
            doc_ids.append(i)
            texts.append(d.text[s.start:s.end])
    return labels, doc_ids, texts, spans


def _encode(encoder, docs, spans, targets, batch_size: int, desc: str, progress: bool) -> dict:
    """``target -> [per-sentence vectors]`` for the sentences that hold mentions."""
    vectors = {t: [] for t in targets}
    bar = progress_bar(total=len(docs), desc=desc, unit="sent", disable=not progress)
    for b in range(0, len(docs), PROGRESS_SENTENCES):
        part = docs[b:b + PROGRESS_SENTENCES]
        out = encoder.encode_targets([d.text for d in part], spans[b:b + PROGRESS_SENTENCES],
                                     targets, batch_size=batch_size)
        for t, per_doc in zip(targets, out):
            vectors[t].extend(v for v in per_doc if len(v))
        bar.update(len(part))
    bar.close()
    return vectors


def extract_mentions(path: str | Path, encoder, max_sentences: int | None = None, seed: int = 0,
                     extra_targets: Sequence[tuple[int, str]] = (), batch_size: int = 32,
                     progress: bool = True, use_cache: bool = True) -> MentionSet:
    """Frozen vectors of every gold mention in a CoNLL/BIO file (cached as ``.npz``).

    ``encoder`` is a :class:`~ner_retriever.models.encoder.TransformerEncoder`; its block/component give
    the returned vectors. ``extra_targets`` are other ``(block, component)`` pairs computed in
    the same forward pass and cached too (for ablations), at no extra model cost when their
    block is not above the encoder's."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError("no such file", str(path))
    cfg = encoder.config
    own = cfg.targets  # the encoder's vector: these side by side
    targets = own + [t for t in dict.fromkeys(extra_targets) if t not in own]
    files = {t: mention_cache_file(path, cfg, t[0], t[1], max_sentences, seed) for t in targets}
    if use_cache and all(files[t].is_file() for t in own):
        return _joined([_load_npz(files[t]) for t in own])

    docs = sample_documents(path, max_sentences, seed)
    labels, doc_ids, texts, spans = _gold(docs)
    vectors = _encode(encoder, docs, spans, targets, batch_size, f"encoding {path.name}", progress)
    sets = {}
    for t in targets:
        dim = encoder._dims([t])[0]
        arr = np.concatenate(vectors[t]) if vectors[t] else np.zeros((0, dim), np.float32)
        sets[t] = MentionSet(arr.astype(np.float32), np.array(labels, dtype=str),
                             np.array(doc_ids, dtype=np.int64), len(docs),
                             np.array(texts, dtype=str))
        if use_cache:
            _save_npz(files[t], sets[t])
    return _joined([sets[t] for t in own])


def _joined(sets: list[MentionSet]) -> MentionSet:
    """One target's mentions, or several targets' vectors side by side."""
    if len(sets) == 1:
        return sets[0]
    return dataclasses.replace(sets[0], vectors=np.concatenate([s.vectors for s in sets], axis=1))


def progress_bar(**kwargs):
    """A tqdm bar, imported only when training runs (keeps ``--help`` light)."""
    from tqdm.auto import tqdm

    return tqdm(**kwargs)
