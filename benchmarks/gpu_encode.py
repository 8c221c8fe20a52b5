"""Mention encoding on a GPU: throughput of the encoder, and how far bf16 GPU vectors are from
the fp32 CPU ones.

Usage (figures in docs/SCALE.md, "Encoding on a GPU"):
    PYTHONPATH=src python benchmarks/gpu_encode.py --shapes smollm2-135m,llama-3.1-8b \\
        --tokenizer TOKENIZER_DIR [--data BIO_FILE] [--docs 8000] [--batch-sizes 16,64,256]
    PYTHONPATH=src python benchmarks/gpu_encode.py --model ID_OR_PATH --block 17

Encoding cost does not depend on the weights, so ``--shapes`` builds randomly initialised
models of a known architecture (no download: LLaMA-3.1-8B's shape runs where only its config is
known) and tokenizes with ``--tokenizer`` (any Hugging Face tokenizer folder; the default
model's is written to the cache on first use). ``--model`` measures a real model instead.

Two document sets from ``--data`` (gold spans): the sentences, one document each (Few-NERD:
~31 tokens), and the same sentences joined into ~500-token documents. For each batch size:
documents/s, tokens/s and mentions/s of ``TransformerEncoder.encode_spans`` (tokenizing and
windowing included: that part runs on the CPU), and the peak GPU memory. ``--check`` compares
the default model's shape (seeded weights) on CPU fp32 and GPU bf16: cosine of every mention
vector, and GPU batch size 1 against 64 (padding must not change a vector).

``--joint BLOCK`` times the learned detector's single pass instead (``detect_encode``: blocks
0..BLOCK over every token, a random tagger head's per-token part next to the model as the
learned detector runs it, then the later blocks resumed only on windows holding a span, cut
after it), with the gold spans standing in for the detector's decision, against
``encode_spans`` on the same spans: what looking at every token costs on a GPU. It first checks
on the GPU what the CPU tests check: the causality probe passes, the resumed pass is taken
(``_resume_block``), and its vectors match ``encode_spans``."""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from ner_retriever.io.corpus import read_conll
from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LONG_CHARS = 1_900  # ~500 tokens of Few-NERD text (0.26 tokens a character)
SHAPES = {  # architecture constants of the published configs; block = the one we read
    "smollm2-135m": ({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                      "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                      "rope_theta": 100000.0, "tie_word_embeddings": True}, 22),
    "llama-3.1-8b": ({"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                      "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                      "rope_theta": 500000.0, "tie_word_embeddings": False}, 17),
}


def random_model(shape: str, device: str, seed: int = 0):
    """A Llama of the given shape with seeded random weights, built directly on ``device``."""
    from transformers import LlamaConfig, LlamaModel

    constants, block = SHAPES[shape]
    config = LlamaConfig(**constants, max_position_embeddings=8192, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaModel(config).to(dtype)
    return model.eval(), block


def long_documents(docs: list) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Join consecutive sentences (with a space) into documents of about ``LONG_CHARS``."""
    texts, spans, text, sp = [], [], "", []
    for doc in docs:
        offset = len(text) + (1 if text else 0)
        text = f"{text} {doc.text}" if text else doc.text
        sp += [(s.start + offset, s.end + offset) for s in doc.spans]
        if len(text) >= LONG_CHARS:
            texts.append(text)
            spans.append(sp)
            text, sp = "", []
    if text:
        texts.append(text)
        spans.append(sp)
    return texts, spans


def throughput(encoder: TransformerEncoder, texts, spans, batch_size: int) -> dict:
    tokens = sum(len(encoder._tokenize(t)[0]) + len(encoder._prefix) for t in texts)
    encoder.encode_spans(texts[:batch_size], spans[:batch_size], batch_size)  # warm up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    encoder.encode_spans(texts, spans, batch_size)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    mentions = sum(len(s) for s in spans)
    row = {"batch_size": batch_size, "documents": len(texts), "seconds": round(seconds, 2),
           "docs_per_s": round(len(texts) / seconds, 1), "tokens_per_s": round(tokens / seconds),
           "mentions_per_s": round(mentions / seconds)}
    if torch.cuda.is_available():
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return row


def tokenize_only(encoder: TransformerEncoder, texts, spans) -> float:
    """Documents/s of tokenizing and windowing alone (the CPU share of encode_spans)."""
    start = time.perf_counter()
    for i, (t, s) in enumerate(zip(texts, spans)):
        for _ in encoder._pieces(i, t, s):
            pass
    return round(len(texts) / (time.perf_counter() - start), 1)


def check(tokenizer, texts, spans) -> dict:
    """CPU fp32 vs GPU bf16 on the default model's shape, same seeded weights."""
    config = EncoderConfig(model="smollm2-135m-random", block=SHAPES["smollm2-135m"][1])
    cpu_model, _ = random_model("smollm2-135m", "cpu")
    cpu = TransformerEncoder(config, cpu_model, tokenizer, device="cpu")
    reference = np.concatenate(cpu.encode_spans(texts, spans, 64))
    gpu = TransformerEncoder(config, cpu_model, tokenizer, device="cuda")  # moves, casts to bf16
    batched = np.concatenate(gpu.encode_spans(texts, spans, 64))
    single = np.concatenate(gpu.encode_spans(texts, spans, 1))

    def cosines(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    cpu_gpu, padding = cosines(reference, batched), cosines(single, batched)
    return {"mentions": len(reference), "dtype": str(gpu.model.dtype),
            "cpu_fp32_vs_gpu": {"mean": round(float(cpu_gpu.mean()), 5),
                                "min": round(float(cpu_gpu.min()), 5)},
            "gpu_batch1_vs_batch64": {"mean": round(float(padding.mean()), 5),
                                      "min": round(float(padding.min()), 5)}}


def joint(encoder: TransformerEncoder, feature_block: int, texts, spans,
          batch_size: int) -> dict:
    """``detect_encode`` with the gold spans as the decision, against ``encode_spans``."""
    feats = [(feature_block, "hidden")]

    def decide(doc_ids, _features, _offsets):
        return [list(spans[d]) for d in doc_ids]

    # the tagger head's per-token part runs next to the model, as LearnedDetector runs it
    from ner_retriever.detect.tagger import TaggerConfig, TaggerHead

    device = next(encoder.model.parameters()).device
    head = TaggerHead(TaggerConfig(model="random", features=feats,
                                   input_dim=encoder._dims(feats)[0])).to(device).eval()

    @torch.inference_mode()
    def project(x, _lengths):
        return head.project(x.float())

    resume = encoder._resume_block(feats)
    _, got = encoder.detect_encode(texts[:500], feats, decide, batch_size=batch_size,
                                   token_head=project)
    ref = encoder.encode_spans(texts[:500], spans[:500], batch_size)
    a, b = np.concatenate(got), np.concatenate(ref)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    row = {"causal": encoder.causal, "resume_block": resume, "checked_mentions": len(a),
           "joint_vs_encode_spans_cos": {"mean": round(float(cos.mean()), 5),
                                         "min": round(float(cos.min()), 5)}}
    for name, run in (("encode_spans", lambda: encoder.encode_spans(texts, spans, batch_size)),
                      ("joint", lambda: encoder.detect_encode(texts, feats, decide,
                                                              batch_size=batch_size,
                                                              token_head=project))):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        start = time.perf_counter()
        run()
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        row[f"{name}_docs_per_s"] = round(len(texts) / (time.perf_counter() - start), 1)
    row["joint_over_encode_spans"] = round(row["joint_docs_per_s"]
                                           / row["encode_spans_docs_per_s"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="smollm2-135m,llama-3.1-8b")
    parser.add_argument("--model", help="measure this model (id, folder or alias) instead")
    parser.add_argument("--block", type=int)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder for --shapes")
    parser.add_argument("--data", type=Path,
                        default=DATA / "fewnerd" / "inter_bio_structshot" / "big_test.txt")
    parser.add_argument("--docs", type=int, default=8000)
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--joint", type=int, metavar="BLOCK",
                        help="also time detect_encode with a detector reading this block")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    if not args.model and not args.tokenizer:
        parser.error("--shapes builds models without a tokenizer: give --tokenizer FOLDER "
                     "(any Hugging Face tokenizer), or measure a real model with --model")
    from transformers import AutoTokenizer, __version__ as hf_version

    docs = list(itertools.islice(read_conll(args.data), args.docs))
    sets = {"sentences": ([d.text for d in docs], [[(s.start, s.end) for s in d.spans]
                                                    for d in docs]),
            "500-token documents": long_documents(docs)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__, "transformers": hf_version, "data": args.data.name,
              "results": []}
    print(json.dumps({k: v for k, v in report.items() if k != "results"}), flush=True)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
    if args.check:
        texts, spans = sets["sentences"]
        report["check"] = check(tokenizer, texts[:500], spans[:500])
        print(json.dumps({"check": report["check"]}), flush=True)
    runs = [args.model] if args.model else args.shapes.split(",")
    for name in runs:
        if args.model:
            encoder = TransformerEncoder(EncoderConfig(model=name, block=args.block), device=device)
        else:
            model, block = random_model(name, device)
            encoder = TransformerEncoder(EncoderConfig(model=f"{name}-random", block=block),
                                         model, tokenizer, device=device)
        for set_name, (texts, spans) in sets.items():
            if args.joint is not None:
                row = {"model": name, "set": set_name, "feature_block": args.joint,
                       "block": encoder.config.block,
                       "batch_size": int(args.batch_sizes.split(",")[-1]),
                       **joint(encoder, args.joint, texts, spans,
                               int(args.batch_sizes.split(",")[-1]))}
                report["results"].append(row)
                print(json.dumps(row), flush=True)
                continue
            cpu_share = tokenize_only(encoder, texts, spans)
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                row = {"model": name, "block": encoder.config.block, "dim": encoder.dim,
                       "set": set_name, "tokenize_docs_per_s": cpu_share,
                       **throughput(encoder, texts, spans, batch_size)}
                report["results"].append(row)
                print(json.dumps(row), flush=True)
        del encoder
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
