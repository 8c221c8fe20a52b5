"""Evaluate ranks exactly as search does: on one flat fp32 index, ``evaluate``'s hybrid and
mention rankings (given the index's own vectors and the same k) return the documents and
scores that ``Retriever.search`` returns, for every mode x names on/off x feedback 0/20.
Every published R-Precision rests on this."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ner_retriever import Retriever
from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.evaluation.scoring import hybrid_rank, mention_document_scores
from ner_retriever.retrieve.sources import ArraySource

pytestmark = pytest.mark.slow  # loads SmolLM2 and MiniLM

CONLL = Path(__file__).resolve().parents[1] / "data" / "golden" / "fewnerd_dev_120.txt"


def index_sides(r: Retriever, positions: dict[str, int]) -> tuple[ArraySource, list[int]]:
    """The index's stored vectors, in eval-set document order."""
    keys, live, documents = r.index.doc_vectors
    assert live.all()
    key_list = keys.tolist()
    by_key = r.index.documents_by_key(key_list)
    order = [positions[by_key[k].id] for k in key_list]
    assert order == sorted(order)  # keys follow insertion order
    _, mention_docs, mentions = r.index.document_mentions(key_list)
    names = name_docs = None
    if r.index.config.names:
        name_docs, names = r.index.document_names(key_list)
    return ArraySource(mentions, mention_docs, documents, names, name_docs), key_list


def top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    finite = np.flatnonzero(np.isfinite(scores))
    ranked = finite[np.lexsort((finite, -scores[finite]))][:k]
    return [(int(i), float(scores[i])) for i in ranked]


@pytest.mark.parametrize("names", [True, False])
def test_evaluate_equals_search(tmp_path, smol_encoder, names):
    eval_set = load_eval_set([CONLL])
    positions = {d.id: i for i, d in enumerate(eval_set.docs)}
    with Retriever.create(tmp_path / "idx", encoder=smol_encoder, detector="gold",
                          names=names) as r:
        r.add(eval_set.docs)
        sides, _ = index_sides(r, positions)
        checked = 0
        for t in eval_set.types[:8]:
            query = eval_set.descriptions[t][0]
            k = len(eval_set.relevant[t])
            sub = type(eval_set)(eval_set.name, eval_set.docs, [t], [],
                                 {t: eval_set.relevant[t]}, {t: [query]})
            vector = r.embed_search_queries([query])[0]
            mention_q, dense_q = vector[:r.index.config.dim], vector[r.index.config.dim:]
            for feedback in (0, 20):
                got = [(positions[h.doc_id], h.score)
                       for h in r.search_vector(vector, k, feedback=feedback)]
                want = top(hybrid_rank(sub, sides, mention_q[None], dense_q[None],
                                       FusionConfig(feedback_docs=feedback))[0], k)
                assert [g[0] for g in got] == [w[0] for w in want], (t, feedback)
                assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-5)
                checked += 1
            got = [(positions[h.doc_id], h.score) for h in r.search(query, k, mode="mentions")]
            scores = mention_document_scores(mention_q[None], sides.mention_vectors,
                                             sides.mention_docs, len(eval_set.docs))[0]
            want = top(scores, k)
            assert [g[0] for g in got] == [w[0] for w in want], t
            assert [g[1] for g in got] == pytest.approx([w[1] for w in want], abs=1e-5)
        assert checked == 16
