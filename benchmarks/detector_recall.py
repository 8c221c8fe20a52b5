"""Mention-detection recall/precision on the gold NER test sets in ../shared/data.

For each dataset, a deterministic sample of sentences (``--sample``, ``--seed``)
is read with ``ner_retriever.io.corpus.read_conll``; every detector's spans are
compared with the gold spans (labels ignored), by exact boundaries and by any
character overlap.  The markdown table is printed and written into
docs/DETECTION.md between the ``<!-- detector-recall:begin/end -->`` markers,
with the command line and date.

    PYTHONPATH=src python benchmarks/detector_recall.py --sample 1000

``--throughput N`` also indexes the first N sentences of each dataset with every detector
(``Retriever.add``: detect + encode + commit, one shared encoder, detectors warmed up first,
``--rounds`` alternating rounds, median time) and reports documents/s and the ratio to
``spacy`` measured in the same run, between the ``detector-throughput`` markers.
``spacy@whole`` (a default column) is ``spacy`` with whole windows, the encoder as it was before
it cut causal windows after their last span: the default indexing path before 2026-11-26.
``NAME@spans`` indexes the spans NAME finds (detected before the clock starts) as if they were
gold: the encoder's cost for exactly those spans, so ``NAME`` minus ``NAME@spans`` is what
detecting them costs, and ``NAME@spans / spacy`` bounds how fast any detector finding the same
spans could index.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import random
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from ner_retriever.detect.base import match_spans
from ner_retriever.detect.registry import build_detector
from ner_retriever.types import Document

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "Few-NERD (inter, test)": "fewnerd/inter_bio_structshot/big_test.txt",
    "MultiCoNER2 EN (dev)": "multiconer2_en/en-dev.conll",
    "WNUT-17 (test)": "wnut17/emerging.test.annotated",
}
DETECTORS = ["spacy-ents", "spacy", "learned", "learned+spacy-ents", "learned+spacy"]
BEGIN, END = "<!-- detector-recall:begin -->", "<!-- detector-recall:end -->"
WHOLE = "@whole"
SPANS = "@spans"
TP_BEGIN, TP_END = "<!-- detector-throughput:begin -->", "<!-- detector-throughput:end -->"


def load(path: Path) -> list[Document]:
    from ner_retriever.io.corpus import read_conll

    return [d for d in read_conll(path) if d.text.strip()]


def sample(docs: list[Document], n: int, seed: int) -> list[Document]:
    if n <= 0 or n >= len(docs):
        return docs
    idx = sorted(random.Random(seed).sample(range(len(docs)), n))
    return [docs[i] for i in idx]


def evaluate(detector_name: str, docs: list[Document],
             memo: dict[str, tuple[list, float]] | None = None) -> dict[str, float]:
    """Scores of one detector; a union ``a+b`` whose members are in ``memo`` (predictions and
    seconds of earlier rows on the same documents) is assembled from them, not rerun."""
    from ner_retriever.detect.base import resolve_overlaps

    parts = [p.strip() for p in detector_name.split("+")]
    if memo is not None and len(parts) > 1 and all(p in memo for p in parts):
        preds = [resolve_overlaps(memo[p][0][i] for p in parts) for i in range(len(docs))]
        secs = sum(memo[p][1] for p in parts)
    else:
        det = build_detector(detector_name)
        t0 = time.perf_counter()
        preds = det.detect(docs)
        secs = time.perf_counter() - t0
    if memo is not None:
        memo[detector_name] = (preds, secs)
    n_pred = sum(len(p) for p in preds)
    n_gold = sum(len(d.spans or ()) for d in docs)
    row: dict[str, float] = {"pred": n_pred, "gold": n_gold, "secs": secs}
    for mode in ("exact", "overlap"):
        tp_pred = tp_gold = 0
        for p, d in zip(preds, docs, strict=True):
            a, b = match_spans(p, d.spans or (), mode)
            tp_pred += a
            tp_gold += b
        row[f"R_{mode}"] = tp_gold / n_gold if n_gold else 0.0
        row[f"P_{mode}"] = tp_pred / n_pred if n_pred else 0.0
    return row


def throughput(detector_names: list[str], docs: list[Document], rounds: int,
               encoder) -> dict[str, tuple[float, float]]:
    """``(documents per wall-clock second, CPU seconds per 100 documents, documents per
    second in the fastest round)`` of ``Retriever.add`` with each detector; the first two are
    medians over alternating rounds.  On a machine shared with other jobs the fastest round
    (as ``timeit`` reports) is the steadiest estimate of the cost itself."""
    import statistics
    import tempfile

    from ner_retriever.retrieve.retriever import Retriever

    # "NAME@whole": NAME with whole windows, as before causal encoders cut them (a reference)
    dets = {n: build_detector(n.removesuffix(WHOLE).removesuffix(SPANS), encoder)  # shared model
            for n in detector_names}
    causal = encoder.causal
    for det in dets.values():  # load spaCy pipelines / weights outside the timing
        det.detect(docs[:8])
    inputs = {n: docs for n in detector_names}
    for n in detector_names:  # "NAME@spans": NAME's spans, detected untimed, passed through
        if n.endswith(SPANS):
            found = dets[n].detect(docs)
            inputs[n] = [replace(d, spans=tuple(s)) for d, s in zip(docs, found)]
            dets[n] = build_detector("gold")
    secs: dict[str, list[float]] = {n: [] for n in detector_names}
    cpu: dict[str, list[float]] = {n: [] for n in detector_names}
    for r in range(rounds):
        order = detector_names if r % 2 == 0 else detector_names[::-1]
        for n in order:
            encoder.causal = causal and not n.endswith(WHOLE)
            with tempfile.TemporaryDirectory() as tmp:
                with Retriever.create(Path(tmp) / "idx", encoder=encoder, detector=dets[n]) as ret:
                    c0 = time.process_time()
                    stats = ret.add(inputs[n], commit_every=256)
                    cpu[n].append(time.process_time() - c0)
            encoder.causal = causal
            secs[n].append(stats.seconds)
            print(f"  {n}: {len(docs) / stats.seconds:.1f} docs/s, "
                  f"{100 * cpu[n][-1] / len(docs):.1f} CPU s/100 docs", file=sys.stderr, flush=True)
    return {n: (len(docs) / statistics.median(secs[n]), 100 * statistics.median(cpu[n]) / len(docs),
                len(docs) / min(secs[n])) for n in detector_names}


def _replace_block(path: Path, begin: str, end: str, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=1000, help="sentences per dataset (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "DETECTION.md",
                    help="markdown file to update ('-' = do not write)")
    ap.add_argument("--throughput", type=int, default=0,
                    help="also time indexing of the first N sentences per dataset (0 = skip)")
    ap.add_argument("--throughput-detectors", default="spacy,learned,learned+spacy,gold,spacy@whole",
                    help="NAME@whole: NAME with whole windows (causal encoders cut them after "
                         "the last span since 2026-11-26); NAME@spans: the encoder alone on "
                         "NAME's spans")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-recall", action="store_true", help="only the throughput table")
    args = ap.parse_args(argv)
    cmd = "PYTHONPATH=src python " + " ".join(
        shlex.quote(a) for a in [f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]
    ) if argv is None else "main(" + repr(argv) + ")"

    if args.throughput > 0:
        import torch

        from ner_retriever.models.encoder import TransformerEncoder

        encoder = TransformerEncoder()
        names = args.throughput_detectors.split(",")
        others = [n for n in names if n != "spacy"]
        tp_lines = ["| dataset | sentences | measure | " + " | ".join(names) + " | "
                    + " | ".join(f"{n} / spacy" for n in others) + " |",
                    "|---|--:|---|" + "--:|" * (len(names) + len(others))]
        for ds_name, rel in DATASETS.items():
            path = args.data / rel
            if not path.exists():
                continue
            docs = load(path)[: args.throughput]
            print(f"throughput {ds_name}", file=sys.stderr, flush=True)
            res = throughput(names, docs, args.rounds, encoder)
            rate = {n: v[0] for n, v in res.items()}
            cpu_rate = {n: 100.0 / v[1] for n, v in res.items()}  # docs per CPU second
            best = {n: v[2] for n, v in res.items()}
            for label, values, speed in (
                    ("docs/s, fastest round", best, best),
                    ("docs/s, median", rate, rate),
                    ("CPU s / 100 docs, median", {n: v[1] for n, v in res.items()}, cpu_rate)):
                fmt = "{:.1f}"
                base = speed.get("spacy")
                tp_lines.append(f"| {ds_name} | {len(docs)} | {label} | "
                                + " | ".join(fmt.format(values[n]) for n in names) + " | "
                                + " | ".join(f"{speed[n] / base:.2f}" if base else "-"
                                             for n in others) + " |")
                print(tp_lines[-1], flush=True)
        tp_table = "\n".join(tp_lines)
        print()
        print(tp_table)
        if str(args.out) != "-":
            _replace_block(args.out, TP_BEGIN, TP_END,
                           f"{TP_BEGIN}\nMeasured {_dt.date.today().isoformat()} with `{cmd}` "
                           f"(torch threads: {torch.get_num_threads()}):\n\n{tp_table}\n{TP_END}")
        if args.skip_recall:
            return 0

    lines = [
        "| dataset | detector | sentences | gold | predicted | R exact | P exact "
        "| R overlap | P overlap | sec |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for ds_name, rel in DATASETS.items():
        path = args.data / rel
        if not path.exists():
            print(f"skip {ds_name}: {path} not found", file=sys.stderr)
            continue
        docs = sample(load(path), args.sample, args.seed)
        memo: dict[str, tuple[list, float]] = {}
        for det_name in args.detectors.split(","):
            r = evaluate(det_name, docs, memo)
            lines.append(
                f"| {ds_name} | {det_name} | {len(docs)} | {int(r['gold'])} | {int(r['pred'])} "
                f"| {r['R_exact']:.3f} | {r['P_exact']:.3f} "
                f"| {r['R_overlap']:.3f} | {r['P_overlap']:.3f} | {r['secs']:.1f} |"
            )
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print()
    print(table)

    if str(args.out) != "-":
        block = (
            f"{BEGIN}\nMeasured {_dt.date.today().isoformat()} with `{cmd}`:\n\n{table}\n{END}"
        )
        _replace_block(args.out, BEGIN, END, block)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
