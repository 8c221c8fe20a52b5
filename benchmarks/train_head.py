"""Projection-head training ablation (docs/TRAINING.md).

Trains heads on Few-NERD INTER-train types only (dev.txt 4,000 + test.txt 2,000 sentences,
seed 0) and scores raw vectors vs each head on the Few-NERD INTER test sample (5,000
sentences, seed 0, unseen types, gold mentions), macro R-Precision:

    PYTHONPATH=src python benchmarks/train_head.py --epochs 7 --variants "" \
        --set "shipped:cv_folds=0;val_fraction=0" --set "names:cv_folds=0;val_fraction=0;descriptions=\"names\""

``--set NAME:key=value;...`` overrides TrainConfig fields (JSON values). Score a saved head vs
raw vectors on Few-NERD, MultiCoNER 2 dev and WNUT-17 test:

    PYTHONPATH=src python benchmarks/train_head.py --eval-head src/ner_retriever/data/heads/smollm2-135m

Mention vectors are cached (see ner_retriever.training.mentions.extract_mentions), so reruns are fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
from ner_retriever.models.head import normalize
from ner_retriever.evaluation.descriptions import is_other_tag
from ner_retriever.training.mentions import MentionSet, extract_mentions
from ner_retriever.training.train import TrainConfig, train_head
from ner_retriever.training.validation import encode_descriptions, evaluate_vectors, load_descriptions

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FEWNERD = DATA / "fewnerd" / "inter_bio_structshot"
TRAIN_FILES = [FEWNERD / "dev.txt", FEWNERD / "test.txt"]  # both hold INTER *train* types only
TEST_FILE = FEWNERD / "big_test.txt"  # INTER test types, never trained on
PARAPHRASES = ROOT / "benchmarks" / "fewnerd_train_descriptions.json"

# name -> TrainConfig overrides (+ "descriptions": "names" to train on single readable names)
VARIANTS: dict[str, dict] = {
    "default": {},
    "names_only": {"descriptions": "names"},
    "no_mention_term": {"mention_weight": 0.0},
    "no_description_term": {"description_weight": 0.0},
    "no_hard_batches": {"hard_type_fraction": 0.0},
    "no_center": {"center": False},
    "tau_0.1": {"temperature": 0.1},
    "tau_0.02": {"temperature": 0.02},
    "lr_1e-4": {"lr": 1e-4},
    "triplet": {"loss": "triplet"},
    "plain_mlp": {"residual": False, "center": False},
    "refit": {"refit": True},
    "linear_only": {"linear_only": True},
    "wd_0.1": {"weight_decay": 0.1},
    "wd_1": {"weight_decay": 1.0},
    "dropout_0.3": {"dropout": 0.3},
    "out_192": {"output_dim": 192},
    "no_query_center": {"query_center": False},
    "whiten_1": {"whiten": 1.0},
    "whiten_3": {"whiten": 3.0},
    "epochs_0": {"epochs": 0},
}


EVAL_SETS = {  # name -> (file, shipped description map, sentence sample)
    "fewnerd-inter-test": (TEST_FILE, "fewnerd", 5000),
    "multiconer2-en-dev": (DATA / "multiconer2_en" / "en-dev.conll", "multiconer2", None),
    "wnut17-test": (DATA / "wnut17" / "emerging.test.annotated", "wnut17", None),
}


def evaluate_head(head_dir: Path, template: str) -> None:
    """Raw vectors vs a saved head on every evaluation set (gold mentions, macro R-Precision)."""
    from ner_retriever.models.head import ProjectionHead

    head = ProjectionHead.load(head_dir)
    cfg = head.config
    template = cfg.query_template or template
    encoder = TransformerEncoder(EncoderConfig(model=cfg.model or "smollm2-135m", block=cfg.block,
                                               component=cfg.component or "value",
                                               query_template=template))
    for name, (path, dmap, n) in EVAL_SETS.items():
        ms = extract_mentions(path, encoder, n, 0)
        types = [t for t in ms.types if not is_other_tag(t)]
        queries = encode_descriptions(encoder, load_descriptions(dmap, types))
        raw = evaluate_vectors(ms, queries)
        trained = evaluate_vectors(ms, queries, head.project,
                                   project_queries=head.project_queries)
        print(json.dumps({"set": name, "sentences": ms.n_docs, "mentions": len(ms),
                          "types": len(types), "template": template,
                          "raw": round(raw["r_precision"], 4),
                          "head": round(trained["r_precision"], 4),
                          "per_type_head": {t: round(v, 3) for t, v in trained["per_type"].items()},
                          "per_type_raw": {t: round(v, 3) for t, v in raw["per_type"].items()}}),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="default")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--component", default="value")
    ap.add_argument("--template", default="mentions of {}", help="query template")
    ap.add_argument("--train-sentences", default="4000,2000",
                    help="sentences sampled (seed 0) from dev.txt,test.txt")
    ap.add_argument("--test-sentences", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", type=Path, default=None, help="save each head under OUT/VARIANT")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per run")
    ap.add_argument("--set", action="append", default=[],
                    help="extra variant NAME:key=value;key=value (TrainConfig fields)")
    ap.add_argument("--eval-head", type=Path, default=None,
                    help="only score this saved head vs raw vectors on every evaluation set")
    args = ap.parse_args()
    if args.eval_head:
        evaluate_head(args.eval_head, args.template)
        return

    encoder = TransformerEncoder(EncoderConfig(block=args.block, component=args.component,
                                               query_template=args.template))
    sizes = [int(n) for n in args.train_sentences.split(",")]
    train = MentionSet.concat([extract_mentions(f, encoder, n, 0)
                               for f, n in zip(TRAIN_FILES, sizes)])
    test = extract_mentions(TEST_FILE, encoder, args.test_sentences, 0)
    test_types = [t for t in test.types if not is_other_tag(t)]
    test_q = encode_descriptions(encoder, load_descriptions("fewnerd", test_types))
    desc_para = encode_descriptions(encoder, load_descriptions(PARAPHRASES, train.types))
    desc_names = encode_descriptions(encoder, load_descriptions("fewnerd", train.types))
    raw = evaluate_vectors(test, test_q)
    print(f"train: {len(train)} mentions / {train.n_docs} sentences / {len(train.types)} types; "
          f"test: {len(test)} mentions / {test.n_docs} sentences / {len(test_types)} types")
    print(f"raw  test R-Precision {raw['r_precision']:.4f}")
    mean = train.vectors.mean(0)
    centred = evaluate_vectors(test, test_q, lambda x: normalize(x - mean))
    print(f"raw centred (train mean) test R-Precision {centred['r_precision']:.4f}")
    assert not set(test_types) & set(train.types), "test types leaked into training"
    for spec in args.set:
        name, _, pairs = spec.partition(":")
        VARIANTS[name] = {k: json.loads(v) for k, v in (p.split("=", 1) for p in pairs.split(";"))}
    names = [n for n in args.variants.split(",") if n] + [s.partition(":")[0] for s in args.set]
    for name in names:
        over = dict(VARIANTS[name])
        desc = desc_names if over.pop("descriptions", None) == "names" else desc_para
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = dataclasses.replace(TrainConfig(epochs=args.epochs, seed=seed), **over)
            t0 = time.time()
            res = train_head(train, desc, cfg, progress=False,
                             head_meta={"model": encoder.config.model, "block": args.block,
                                        "component": args.component,
                                        "query_template": args.template},
                             monitors={"test": (test, test_q)})
            score = evaluate_vectors(test, test_q, res.head.project,
                                     project_queries=res.head.project_queries)
            row = {"variant": name, "seed": seed, "block": args.block, "template": args.template,
                   "component": args.component, "val": res.best_val, "raw_val": res.raw_val,
                   "best_epoch": res.best_epoch, "test": score["r_precision"],
                   "raw_test": raw["r_precision"], "seconds": round(time.time() - t0, 1),
                   "test_per_epoch": [round(h["test"], 4) for h in res.history],
                   "val_per_epoch": [round(h.get("val_r_precision", float("nan")), 4)
                                     for h in res.history]}
            print(json.dumps(row), flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps({**row, "per_type": score["per_type"]}) + "\n")
            if args.out:
                res.head.save(args.out / f"{name}-s{seed}")


if __name__ == "__main__":
    main()
