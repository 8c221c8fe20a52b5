"""Regenerate the golden search fixture (``search.json``) and its index (``index/``).

    PYTHONPATH=src python tests/data/golden/make_fixture.py

Built at 61117af with the default settings (learned+spacy detector, SmolLM2 block 22 value,
shipped head, hybrid with names) on the first 40 sample documents. ``tests/integration/test_golden.py``
checks that today's code opens that index, searches it identically and appends to it; a later
change that alters results on purpose regenerates both and says why in its commit.
"""

from __future__ import annotations

import json
import shutil
from itertools import islice
from pathlib import Path

from ner_retriever import Retriever
from ner_retriever.io.corpus import read_corpus

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[2] / "src" / "ner_retriever" / "data" / "sample.jsonl"
N_DOCS = 40
QUERIES = ("politician", "river", "musician", "city", "sports team", "award")
CASES = [(mode, feedback) for mode in ("auto", "mentions") for feedback in (0, 20)]


def results_json(retriever: Retriever) -> list[dict]:
    out = []
    for query in QUERIES:
        for mode, feedback in CASES:
            hits = retriever.search(query, k=10, mode=mode, feedback=feedback)
            out.append({"query": query, "mode": mode, "feedback": feedback, "results": [
                {"doc_id": h.doc_id, "score": h.score,
                 "mentions": [[m.start, m.end, m.score] for m in h.mentions]} for h in hits]})
    return out


def main() -> None:
    index = HERE / "index"
    if index.exists():
        shutil.rmtree(index)
    docs = list(islice(read_corpus(SAMPLE), N_DOCS))
    with Retriever.create(index) as r:
        r.add(docs)
        (HERE / "search.json").write_text(json.dumps(results_json(r), indent=1) + "\n")


if __name__ == "__main__":
    main()
