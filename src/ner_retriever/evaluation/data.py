"""Evaluation data: CoNLL/BIO sentences as documents, the evaluated types, their relevant
documents and query descriptions."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ner_retriever.errors import ConfigError, CorpusError
from ner_retriever.io.cache import digest
from ner_retriever.evaluation.descriptions import Descriptions, is_other_tag
from ner_retriever.types import Document, Span

SENTENCE_SEPARATOR = " "  # between the sentences of a grouped document
GROUP_SEED = 0  # the shuffle before grouping (docs/RESULTS.md: 8-sentence documents)


@dataclass
class EvalSet:
    """Documents, the evaluated types, their relevant documents and query descriptions."""

    name: str
    docs: list[Document]
    types: list[str]
    skipped: list[str]
    relevant: dict[str, np.ndarray]  # tag -> sorted document indices
    descriptions: dict[str, list[str]]  # tag -> [canonical, alternatives...]
    identity: dict = field(default_factory=dict)  # what the documents are (for cache keys)

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.docs]

    @property
    def gold_spans(self) -> list[list[tuple[int, int]]]:
        return [[(s.start, s.end) for s in (d.spans or ())] for d in self.docs]

    def queries(self) -> list[str]:
        return [self.descriptions[t][0] for t in self.types]



def sample_indices(n: int, sample: int | None, seed: int) -> list[int]:
    """``random.Random(seed).sample(range(n), sample)`` in file order (all when sample >= n)."""
    if sample is None or sample >= n:
        return list(range(n))
    if sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {sample}")
    return sorted(random.Random(seed).sample(range(n), sample))



def load_eval_set(paths: Sequence[str | Path], descriptions: Descriptions | None = None,
                  sample: int | None = None, seed: int = 0, include_other: bool = False,
                  types: Sequence[str] | None = None,
                  exclude_texts: Collection[str] = ()) -> EvalSet:
    """Read CoNLL/BIO files (one document per sentence), optionally subsample sentences.

    ``exclude_texts``: sentences to leave out before sampling, e.g. those a learned detector
    was trained on, when a training file doubles as a validation set."""
    from ner_retriever.io.corpus import file_digest, read_conll

    if not paths:
        raise ConfigError("give at least one CoNLL/BIO file")
    paths = [Path(p) for p in paths]
    docs: list[Document] = []
    fingerprint = []
    for p in paths:
        if not p.is_file():
            raise CorpusError("no such file", str(p))
        fingerprint.append([p.name, file_digest(p)])
        for doc in read_conll(p):
            if len(paths) > 1:  # keep ids distinct across files
                doc = Document(f"{p.name}:{doc.id}", doc.text, doc.metadata, doc.spans, doc.source)
            docs.append(doc)
    excluded = set(exclude_texts)
    if excluded:
        docs = [d for d in docs if d.text not in excluded]
    if not docs:
        raise CorpusError("holds no sentences", ", ".join(map(str, paths)))
    docs = [docs[i] for i in sample_indices(len(docs), sample, seed)]
    descriptions = descriptions or Descriptions()
    members: dict[str, set[int]] = {}
    for i, doc in enumerate(docs):
        for span in doc.spans or ():
            members.setdefault(span.label or "", set()).add(i)
    all_tags = sorted(t for t in members if t)
    skipped = [t for t in all_tags if is_other_tag(t)] if not include_other else []
    evaluated = [t for t in all_tags if t not in skipped]
    if types is not None:
        unknown = [t for t in types if t not in members]
        if unknown:
            raise ConfigError(f"types not found in the data: {', '.join(unknown)}")
        evaluated = [t for t in evaluated if t in set(types)]
    if not evaluated:
        raise ConfigError("no entity type with a relevant document to evaluate")
    name = "+".join(p.name for p in paths)
    return EvalSet(
        name=name, docs=docs, types=evaluated, skipped=skipped,
        relevant={t: np.array(sorted(members[t]), dtype=np.int64) for t in evaluated},
        descriptions={t: descriptions.get_all(t) for t in evaluated},
        identity={"files": fingerprint, "sample": sample, "seed": seed if sample else None,
                  **({"excluded": digest(sorted(excluded))} if excluded else {})},
    )


def _join(docs: Sequence[Document], doc_id: str) -> Document:
    """One document of ``docs``' texts; each gold span keeps its place in the joined text."""
    texts, spans, offset = [], [], 0
    for doc in docs:
        spans += [Span(x.start + offset, x.end + offset, x.label) for x in doc.spans or ()]
        texts.append(doc.text)
        offset += len(doc.text) + len(SENTENCE_SEPARATOR)
    return Document(doc_id, SENTENCE_SEPARATOR.join(texts), spans=tuple(spans),
                    source=docs[0].source)


def group_sentences(eval_set: EvalSet, size: int, seed: int = GROUP_SEED) -> EvalSet:
    """Multi-sentence documents: the sentences shuffled (``seed``), then every ``size``
    consecutive ones joined into one document (the last may be shorter). A document is relevant
    to a type when any of its sentences is; types left with no relevant document cannot occur,
    as every sentence lands in some document."""
    if size < 1:
        raise ConfigError(f"--group must be at least 1 sentence, got {size}")
    if size == 1:
        return eval_set
    order = list(range(len(eval_set.docs)))
    random.Random(seed).shuffle(order)
    chunks = [order[b: b + size] for b in range(0, len(order), size)]
    docs = [_join([eval_set.docs[i] for i in chunk], f"group{k}")
            for k, chunk in enumerate(chunks)]
    group_of = np.empty(len(order), dtype=np.int64)
    for k, chunk in enumerate(chunks):
        group_of[chunk] = k
    relevant = {t: np.unique(group_of[rel]) for t, rel in eval_set.relevant.items()}
    return EvalSet(name=f"{eval_set.name} ({size}-sentence documents)", docs=docs,
                   types=eval_set.types, skipped=eval_set.skipped, relevant=relevant,
                   descriptions=eval_set.descriptions,
                   identity={**eval_set.identity, "group": size, "group_seed": seed})


def type_folds(types: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """Folds over types for cross-validation: sorted, shuffled with ``random.Random(seed)``,
    fold ``i`` = ``order[i::folds]`` (each sorted); the folds of ``benchmarks/validation.py``
    and of the head's own cross-validation."""
    if folds < 2 or folds > len(types):
        raise ConfigError(f"{len(types)} types cannot make {folds} folds")
    order = sorted(types)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::folds]) for i in range(folds)]
