"""End-to-end R-Precision with each detector on *validation* data, to choose the default.

The test splits (docs/DETECTION.md, "End to end") report; this script decides.  It runs
``ner_retriever.evaluation.evaluate.evaluate`` (the default ``ner-retriever`` and ``hybrid``
rankings, detected mentions, relevance from the gold labels) on splits that are neither test
splits nor sentences the shipped learned detector was trained on:

* WNUT-17 dev (``emerging.dev.conll``, YouTube comments; the detector never saw it);
* MultiCoNER 2 ``en-train90.conll`` and Few-NERD INTER ``dev.txt`` (training types), minus
  the 1,000 sentences per file the detector's training sampled, then a seeded sample.

    PYTHONPATH=src python benchmarks/detector_validation.py --sample 1000

Prints one markdown table (with the gold-mention figure for reference) and the mean hybrid
R-Precision over the three sets.  ``--detectors`` takes names, ``learned:FOLDER`` (other
weights) and ``learned@T``, the learned detector at threshold ``T``; ``--weights`` the
confidence weights to try (mention vectors scaled by the learned tagger's confidence ** W, as
indexes store them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ner_retriever.evaluation.descriptions import load_descriptions
from ner_retriever.evaluation.data import load_eval_set
from ner_retriever.evaluation.evaluate import EvalOptions, evaluate
from ner_retriever.training.detector import TrainDetectorConfig, _load_training_docs
from ner_retriever.config import CONFIDENCE_WEIGHT

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# the files the shipped detector was trained on (docs/DETECTION.md)
DETECTOR_FILES = ["fewnerd/inter_bio_structshot/dev.txt", "fewnerd/inter_bio_structshot/test.txt",
                  "multiconer2_en/en-train10.conll", "multiconer2_en/en-train90.conll",
                  "wnut17/wnut17train.conll"]
SETS = {  # name: (file, descriptions)
    "WNUT-17 dev": ("wnut17/emerging.dev.conll", "wnut17"),
    "MultiCoNER 2 train90": ("multiconer2_en/en-train90.conll", "multiconer2"),
    "Few-NERD INTER dev.txt": ("fewnerd/inter_bio_structshot/dev.txt", "fewnerd"),
}


def detector_spec(name: str) -> str | dict:
    """A detector name, where ``learned@T`` / ``learned:FOLDER@T`` is the learned detector at
    threshold ``T`` (also inside a union: ``learned@0.3+spacy``)."""

    def member(part: str) -> str | dict:
        base, _, threshold = part.rpartition("@")
        try:
            value = float(threshold)
        except ValueError:  # no threshold (or an '@' inside a folder name)
            return part
        if base != "learned" and not base.startswith("learned:"):
            raise SystemExit(f"@T is the learned detector's threshold, not {part!r}'s")
        return {"name": "learned", "threshold": value,
                **({"path": base[len("learned:"):]} if base != "learned" else {})}

    members = [member(p) for p in name.split("+")]
    return members[0] if len(members) == 1 else {"name": "union", "detectors": members}


def sample_sizes(text: str) -> list[int | None]:
    """``--exclude-samples``: train-detector's ``--max-sentences`` values (0: every sentence)."""
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sample sizes like 1000,3400, not {text!r}") from None
    if any(v < 0 for v in sizes):
        raise argparse.ArgumentTypeError(f"sample sizes cannot be negative: {text!r}")
    return [v or None for v in sizes]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detectors", default="spacy,learned,learned+spacy")
    ap.add_argument("--weights", default=str(CONFIDENCE_WEIGHT),
                    help="confidence weights W to try: mention vectors * confidence**W "
                         "(detectors without confidences give the same figure for every W)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--exclude-samples", type=sample_sizes, default=[1000],
                    help="leave out the sentences train-detector samples at these "
                         "--max-sentences (1000: the shipped weights'), to compare heads "
                         "trained on more on sentences none of them saw")
    args = ap.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    seen: set[str] = set()
    for size in args.exclude_samples:
        trained, *_ = _load_training_docs([args.data / f for f in DETECTOR_FILES],
                                          TrainDetectorConfig(max_sentences=size),
                                          allow_eval=False)
        seen |= {d.text for d in trained}
    detectors = args.detectors.split(",")
    runs_of = [(d, w) for d in detectors for w in weights]
    label = {(d, w): f"`{d}`" + (f" W={w:g}" if len(weights) > 1 else "") for d, w in runs_of}
    print("| validation set | documents | ranking | gold mentions | "
          + " | ".join(label[r] for r in runs_of) + " |")
    print("|---|--:|---|--:|" + "--:|" * len(runs_of))
    means: dict = {r: [] for r in runs_of}
    for name, (rel, desc) in SETS.items():
        eval_set = load_eval_set([args.data / rel], load_descriptions(desc), sample=args.sample,
                                 seed=args.seed, exclude_texts=seen)
        runs = {"gold": evaluate(eval_set, EvalOptions(methods=("ner-retriever", "hybrid")))}
        for det, w in runs_of:
            print(f"{name}: {det} W={w}", file=sys.stderr, flush=True)
            runs[(det, w)] = evaluate(eval_set, EvalOptions(
                methods=("ner-retriever", "hybrid"), mentions="detected",
                detector=detector_spec(det), confidence_weight=w))
            means[(det, w)].append(runs[(det, w)]["results"]["hybrid"]["r_precision"])
        for method in ("ner-retriever", "hybrid"):
            cells = [f"{runs[r]['results'][method]['r_precision']:.3f}"
                     for r in ["gold", *runs_of]]
            print(f"| {name} | {len(eval_set.docs)} | {method} | " + " | ".join(cells) + " |")
        recall = [runs[r]["detection_recall"] for r in runs_of]
        print(f"| {name} | | overlap recall / spans | 1 / {recall[0]['gold']} | "
              + " | ".join(f"{r['overlap']:.3f} / {r['detected']}" for r in recall) + " |",
              flush=True)
    print("| **mean** | | hybrid | | " + " | ".join(f"{sum(means[r]) / len(means[r]):.3f}"
                                                  for r in runs_of) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
