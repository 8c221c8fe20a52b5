"""evaluation/features.py on hand-made arrays with known answers (no model): exhaustive-mode
P/R/F1 and the threshold rule, type pairs, the inventory's precision and query by example."""

from __future__ import annotations

import numpy as np
import pytest

from ner_retriever.config import FusionConfig
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.evaluation.evaluate import HybridInputs, MentionSide
from ner_retriever.evaluation.features import (choose_threshold, example_scores,
                                               exhaustive_at, exhaustive_grid, full_rankings,
                                               fused_matrix, gold_names, inventory_precision,
                                               pair_precision, pair_scores, pick_examples,
                                               query_by_example, strict_r_precision,
                                               type_pairs, type_queries)
from ner_retriever.evaluation.scoring import hybrid_rank
from ner_retriever.retrieve.fusion import Candidates, rank_all
from ner_retriever.retrieve.sources import ArraySource
from ner_retriever.types import Document, Span


def make_set(docs: list[list[tuple[str, str]]]) -> EvalSet:
    """One document per list of (mention, label), text = the mentions joined, then ' .'."""
    out, members = [], {}
    for i, mentions in enumerate(docs):
        spans, at = [], 0
        for name, label in mentions:
            spans.append(Span(at, at + len(name), label))
            at += len(name) + 1
            members.setdefault(label, set()).add(i)
        out.append(Document(f"d{i}", " ".join(m for m, _ in mentions) + " .", spans=tuple(spans)))
    types = sorted(members)
    return EvalSet("hand", out, types, [], {t: np.array(sorted(members[t])) for t in types},
                   {t: [t] for t in types})


def candidates(keys, fused, rows=(), doc_index=(), row_fused=()) -> Candidates:
    return Candidates(np.array(keys, np.int64), np.array(fused, float),
                      np.array(rows, np.int64), np.array(doc_index, np.int64),
                      np.zeros(len(rows), np.float32), np.array(row_fused, float))


# ---- exhaustive mode ------------------------------------------------------------------------

SCORES = np.array([[3.0, 2.5, 1.0, 2.2, 0.0, -np.inf],   # a: relevant 0, 1, 2
                   [0.0, 0.0, 0.0, 3.0, 1.0, 0.0]])       # b: relevant 3, 4
AB = make_set([[("x", "a")], [("x", "a")], [("x", "a")], [("y", "b")], [("y", "b")], []])


def test_exhaustive_precision_recall_f1_per_type_and_macro():
    at2 = exhaustive_at(AB, SCORES, 2.0)
    # a returns {0, 1, 3}: 2 of 3 right, 2 of 3 found; b returns {3}: right, 1 of 2 found
    assert at2["per_type"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3,
                                                  "f1": 2 / 3})
    assert at2["per_type"]["b"] == pytest.approx({"precision": 1, "recall": 0.5, "f1": 2 / 3})
    assert (at2["precision"], at2["recall"], at2["f1"]) == pytest.approx((5 / 6, 7 / 12, 2 / 3))
    assert at2["returned"] == 2 and at2["relevant"] == 2.5
    nothing = exhaustive_at(AB, SCORES, 10.0)  # an empty answer is not precise
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0, 0, 0)


def test_the_threshold_rule_is_the_lowest_macro_f1_maximum():
    grid = exhaustive_grid(AB, SCORES, (0.5, 1.0, 2.0, 10.0))
    # at 0.5 and at 1.0 the same documents pass: a 3/4 precise, all found; b exact
    assert [g["f1"] for g in grid] == pytest.approx([(6 / 7 + 1) / 2] * 2 + [2 / 3, 0])
    assert "per_type" not in grid[0]
    assert choose_threshold(grid) == 0.5


# ---- type pairs ------------------------------------------------------------------------------

def test_type_pairs_need_five_shared_documents_and_are_capped_by_a_seeded_sample():
    es = make_set([[("x", "a"), ("y", "b"), ("z", "c")]] * 4 + [[("x", "a"), ("y", "b")]]
                  + [[("y", "b"), ("z", "c")]] * 2)
    assert type_pairs(es) == [("a", "b"), ("b", "c")]  # a & c share only 4 documents
    one = type_pairs(es, cap=1)
    assert len(one) == 1 and one[0] in [("a", "b"), ("b", "c")] and type_pairs(es, cap=1) == one


def test_strict_r_precision_gives_unreturned_documents_no_share():
    scores = np.array([2.0, 1.0, -np.inf, -np.inf])
    assert strict_r_precision(scores, np.array([1, 2, 3])) == pytest.approx(1 / 3)
    assert strict_r_precision(np.array([3.0, 2.0, 1.0, -np.inf]), np.array([2])) == 0.0
    assert strict_r_precision(np.array([3.0, 2.0, 1.0, -np.inf]), np.array([0, 2])) == 0.5


def test_a_pair_ranks_documents_past_both_cut_offs_by_the_lower_score():
    a = candidates([0, 1, 2, 3], [3.0, 2.5, 1.0, 2.1])
    b = candidates([0, 1, 2, 3], [2.2, 0.5, 3.0, 2.0])
    scores = pair_scores(a, b, 2.0, 5)
    assert scores.tolist() == [2.2, -np.inf, -np.inf, 2.0, -np.inf]
    es = make_set([[("x", "a")], [("x", "a"), ("y", "b")], [], [("x", "a"), ("y", "b")],
                   [("y", "b")]])
    out = pair_precision(es, [a, b], 2.0, [("a", "b")])  # both: documents 1 and 3
    assert out["per_pair"] == {"a & b": 0.5} and out["r_precision"] == 0.5
    assert out["returned"] == 2 and out["relevant"] == 2
    # without the cut-off: lower scores 2.2, 0.5, 1.0, 2.0, -inf -> top 2 = {0, 3}: also 1/2
    assert out["uncut"] == 0.5
    b_low = candidates([0, 1, 2, 3], [2.2, 2.15, 3.0, 2.0])  # now 1 beats 3 and passes
    assert pair_precision(es, [a, b_low], 2.0, [("a", "b")])["r_precision"] == 0.5
    assert pair_precision(es, [a, b_low], 2.2, [("a", "b")])["r_precision"] == 0.0


# ---- entity inventory ------------------------------------------------------------------------

def test_inventory_precision_counts_gold_names_of_the_type_among_the_top_entities():
    es = make_set([[("Danube", "river"), ("Vienna", "city")], [("danube", "river")]])
    assert gold_names(es) == {"city": {"vienna"}, "river": {"danube"}}
    texts = ["Danube", "Vienna", "danube"]
    city = candidates([0, 1], [1.0, 0.5], [0, 1, 2], [0, 0, 1], [0.4, 1.0, 0.3])
    river = candidates([0, 1], [3.0, 1.0], [0, 1, 2], [0, 0, 1], [3.0, 2.5, 1.0])
    out = inventory_precision(es, [city, river], texts, 2.0)
    # river lists Danube and Vienna (the city in a river document passes too): half right;
    # city lists nothing past the cut-off and stays out of the macro
    assert out["per_type"] == {"river": 0.5} and out["precision"] == 0.5
    assert out["empty_types"] == 1 and out["listed"] == 1.0
    assert inventory_precision(es, [city, river], texts, 2.0, top=1)["precision"] == 1.0
    low = inventory_precision(es, [city, river], texts, 0.2)  # 'Danube' + 'danube': one entity
    assert low["per_type"] == {"city": 0.5, "river": 0.5} and low["listed"] == 2.0


# ---- rankings and query by example -----------------------------------------------------------

RIVER, CITY = np.array([0.0, 1.0]), np.array([0.9, 0.1]) / np.linalg.norm([0.9, 0.1])


class FakeDense:
    """MiniLM stand-in: river names and sentences about rivers point one way, cities another;
    the first river sentence (d0) reads like the city ones."""

    def __init__(self, es: EvalSet):
        self.vectors = {d.text: (RIVER if i in (1, 2) else CITY) for i, d in enumerate(es.docs)}
        self.vectors.update({n: RIVER for n in ("Danube", "Rhine", "Volga")})
        self.vectors.update({n: CITY for n in ("Paris", "Rome", "Oslo")})

    def encode(self, texts):
        return np.array([self.vectors[t] for t in texts], np.float32)


def small_inputs() -> tuple[EvalSet, HybridInputs, MentionSide]:
    es = make_set([[(n, "river")] for n in ("Danube", "Rhine", "Volga")]
                  + [[(n, "city")] for n in ("Paris", "Rome", "Oslo")])
    dense = FakeDense(es)
    vectors = np.repeat(np.eye(3, dtype=np.float32)[:2], 3, axis=0)  # rivers e0, cities e1
    doc_index = np.arange(6)
    side = MentionSide(es.gold_spans, vectors, doc_index, np.eye(3, dtype=np.float32)[[1, 0]],
                       None, {})
    names = dense.encode(["Danube", "Rhine", "Volga", "Paris", "Rome", "Oslo"])
    source = ArraySource(vectors, doc_index, dense.encode(es.texts), names, doc_index)
    return es, HybridInputs(side, dense, np.array([CITY, RIVER], np.float32), source), side


def test_full_rankings_are_the_evaluation_ranking_and_cut_like_rank_all():
    es, inputs, side = small_inputs()  # types sorted: city, river
    cfg = FusionConfig()
    scores = fused_matrix(full_rankings(es, inputs, cfg), 6)
    assert np.array_equal(scores, hybrid_rank(es, inputs.source, side.queries,
                                              inputs.dense_queries, cfg, k=6))
    assert (scores[0, 3:] > scores[0, :3, None]).all()  # city documents first for 'city'
    for i in range(2):
        q = type_queries(inputs, i)
        for t in (-1.0, 0.0, 0.8):
            kept = rank_all(inputs.source, q, cfg, t).keys
            assert kept.tolist() == np.flatnonzero(scores[i] >= t).tolist()


def test_query_by_example_leaves_the_example_document_out_and_beats_its_sentence():
    es, inputs, gold = small_inputs()
    assert pick_examples(es, "river").tolist() == [0, 1, 2]  # fewer than 5: all of them
    own = example_scores(inputs, gold.vectors[0], RIVER, 0, 2, FusionConfig())
    assert own[0] == -np.inf and np.isfinite(own[1:]).all()
    out = query_by_example(es, inputs, gold)
    # the example's mention finds the other rivers every time; the dense baseline given the
    # sentence of d0 (city-like) finds none of them; from d1 (or d2) it finds d2 (d1), and d0
    # ties with the three city documents for the second place: (1 + 1/4) / 2; mean 5/12
    assert out["per_type"]["river"] == pytest.approx({"example": 1.0, "dense_sentence": 5 / 12})
    # from a city sentence, d0 ties with the two other cities for two places: 2/3
    assert out["per_type"]["city"] == pytest.approx({"example": 1.0, "dense_sentence": 2 / 3})
    assert (out["types"], out["examples"]) == (2, 6)
    assert out["ratio"] == pytest.approx(1.0 / ((5 / 12 + 2 / 3) / 2))
