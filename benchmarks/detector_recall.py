"""Mention-detection recall/precision on the gold NER test sets in ../shared/data.

For each dataset, a deterministic sample of sentences (``--sample``, ``--seed``)
is read with ``ner_retriever.corpus.read_conll``; every detector's spans are
compared with the gold spans (labels ignored), by exact boundaries and by any
character overlap.  The markdown table is printed and written into
docs/DETECTION.md between the ``<!-- detector-recall:begin/end -->`` markers,
with the command line and date.

    PYTHONPATH=src python benchmarks/detector_recall.py --sample 1000
"""

from __future__ import annotations

import argparse
import datetime as _dt
import random
import shlex
import sys
import time
from pathlib import Path

from ner_retriever.detect import build_detector, match_spans
from ner_retriever.types import Document

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "Few-NERD (inter, test)": "fewnerd/inter_bio_structshot/big_test.txt",
    "MultiCoNER2 EN (dev)": "multiconer2_en/en-dev.conll",
    "WNUT-17 (test)": "wnut17/emerging.test.annotated",
}
DETECTORS = ["spacy-ents", "spacy"]
BEGIN, END = "<!-- detector-recall:begin -->", "<!-- detector-recall:end -->"


def load(path: Path) -> list[Document]:
    from ner_retriever.corpus import read_conll

    return [d for d in read_conll(path) if d.text.strip()]


def sample(docs: list[Document], n: int, seed: int) -> list[Document]:
    if n <= 0 or n >= len(docs):
        return docs
    idx = sorted(random.Random(seed).sample(range(len(docs)), n))
    return [docs[i] for i in idx]


def evaluate(detector_name: str, docs: list[Document]) -> dict[str, float]:
    det = build_detector(detector_name)
    t0 = time.perf_counter()
    preds = det.detect(docs)
    secs = time.perf_counter() - t0
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=1000, help="sentences per dataset (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default=",".join(DETECTORS))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "DETECTION.md",
                    help="markdown file to update ('-' = do not write)")
    args = ap.parse_args(argv)

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
        for det_name in args.detectors.split(","):
            r = evaluate(det_name, docs)
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
        cmd = "PYTHONPATH=src python " + " ".join(
            shlex.quote(a) for a in [f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]
        ) if argv is None else "main(" + repr(argv) + ")"
        block = (
            f"{BEGIN}\nMeasured {_dt.date.today().isoformat()} with `{cmd}`:\n\n{table}\n{END}"
        )
        text = args.out.read_text() if args.out.exists() else ""
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            text = head + block + rest.split(END, 1)[1]
        else:
            text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
        args.out.write_text(text)
        print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
