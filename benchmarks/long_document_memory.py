"""Peak memory of indexing one long document (1 MB vs 10 MB): windowing keeps it bounded.

Each size runs in a fresh process, which loads the model (and detector), indexes a small
warm-up document, records its resident memory (the baseline), then adds ONE document of the
given size through ``Retriever.add`` (detection, windowed encoding, commit) and reports the
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and the time.

Mentions: ``--detector gold`` puts a synthetic gold span every ``--span-every`` characters, so
the encoder's windowing is measured on its own (and the real model stays affordable on a CPU:
only windows holding a span end are run); ``--detector spacy-ents``/``spacy`` runs the real
detector on the whole text (spaCy gets pieces of at most 100,000 characters).

    python benchmarks/long_document_memory.py                       # SmolLM2, gold spans
    python benchmarks/long_document_memory.py --model tiny --span-every 2000
    python benchmarks/long_document_memory.py --model tiny --detector spacy-ents
    python benchmarks/long_document_memory.py --detector learned --sizes 0.25 0.5 1 --detect-only

``--detect-only`` measures the detector's joint pass alone (``detect_and_encode``: spans and
their raw vectors), without the index: what remains of the growth is then the spans and
vectors found, not the pass over the text.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SENTENCES = [
    "Angela Merkel met Emmanuel Macron in Paris to discuss the budget.",
    "The Danube flows through Vienna, Bratislava and Budapest before reaching the Black Sea.",
    "Toyota unveiled the new Corolla at the Tokyo Motor Show.",
    "Marie Curie received the Nobel Prize in Physics in 1903.",
    "The Los Angeles Lakers beat the Boston Celtics in the NBA Finals.",
    "Amazon opened a new office in Seattle, led by Andy Jassy.",
    "it rained all day and nobody went outside, so the streets stayed empty.",
]


def make_text(megabytes: float) -> str:
    size = int(megabytes * 1_000_000)
    parts, total, i = [], 0, 0
    while total < size:
        sentence = f"{SENTENCES[i % len(SENTENCES)]} ({i})"
        parts.append(sentence)
        total += len(sentence) + 1
        i += 1
        if i % 40 == 0:
            parts.append("\n")
    return " ".join(parts)[:size]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def windows_of(encoder, tokens: int) -> int:
    window = encoder.window
    return 1 + max(0, -(-(tokens - window) // max(
        1, window - min(encoder.config.overlap, window - 1))))


def detect_only(megabytes: float, model: str | None, detector: str) -> dict:
    """Runs in a fresh process: the detector's joint pass over one long document."""
    from ner_retriever.detect.registry import build_detector
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder
    from ner_retriever.types import Document

    encoder = TransformerEncoder(EncoderConfig(model=model) if model else EncoderConfig())
    det = build_detector(detector)
    det.detect_and_encode([Document("warm", make_text(0.002))], encoder)
    baseline_peak = peak_mb()
    text = make_text(megabytes)
    start = time.perf_counter()
    spans, vectors = det.detect_and_encode([Document("long", text)], encoder)
    seconds = time.perf_counter() - start
    peak = peak_mb()
    tokens = len(encoder._tokenize(text)[0])
    return {"megabytes": round(len(text.encode()) / 1e6, 2), "mentions": len(spans[0]),
            "tokens": tokens, "windows_in_document": windows_of(encoder, tokens),
            "seconds": round(seconds, 1), "baseline_peak_mb": round(baseline_peak, 1),
            "peak_mb": round(peak, 1), "growth_mb": round(peak - baseline_peak, 1),
            "vectors_mb": round(vectors[0].nbytes / 2**20, 1), "model": encoder.config.model,
            "detector": detector, "max_length": encoder.config.max_length,
            "torch_threads": __import__("torch").get_num_threads()}


def child(megabytes: float, model: str | None, detector: str, span_every: int) -> dict:
    """Runs in a fresh process: baseline after warm-up, then one long document."""
    from ner_retriever.models.encoder import EncoderConfig
    from ner_retriever.retrieve.retriever import Retriever
    from ner_retriever.types import Document, Span

    def spans_for(text: str):
        if detector != "gold":
            return None
        out, pos = [], 0
        while pos < len(text):
            start = text.find("Paris", pos)
            if start < 0:
                break
            out.append(Span(start, start + 5))
            pos = start + max(span_every, 5)
        return tuple(out)

    with tempfile.TemporaryDirectory() as tmp:
        encoder = EncoderConfig(model=model) if model else EncoderConfig()
        with Retriever.create(Path(tmp) / "idx", encoder=encoder, detector=detector) as r:
            warm = make_text(0.002)
            r.add([Document("warm", warm, spans=spans_for(warm))])
            baseline_rss, baseline_peak = rss_mb(), peak_mb()
            text = make_text(megabytes)
            doc = Document("long", text, spans=spans_for(text))
            text_mb = len(text.encode()) / 1e6
            start = time.perf_counter()
            stats = r.add([doc])
            seconds = time.perf_counter() - start
            peak = peak_mb()  # before the token count below, which tokenizes again
            tokens = len(r.encoder._tokenize(text)[0])
            windows_total = windows_of(r.encoder, tokens)
            result = {"megabytes": round(text_mb, 2), "mentions": stats.mentions,
                      "tokens": tokens, "windows_in_document": windows_total,
                      "seconds": round(seconds, 1), "baseline_rss_mb": round(baseline_rss, 1),
                      "baseline_peak_mb": round(baseline_peak, 1),
                      "peak_mb": round(peak, 1),
                      "vectors_mb": round(stats.mentions * r.index.config.dim * 4 / 2**20, 1),
                      "model": r.encoder.config.model, "detector": detector,
                      "max_length": r.encoder.config.max_length,
                      "torch_threads": __import__("torch").get_num_threads()}
    result["growth_mb"] = round(result["peak_mb"] - result["baseline_peak_mb"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10], help="megabytes")
    parser.add_argument("--model", default=None,
                        help="default: smollm2-135m; 'tiny': a tiny random Llama")
    parser.add_argument("--detector", default="gold", help="gold (synthetic spans), "
                        "spacy-ents or spacy")
    parser.add_argument("--span-every", type=int, default=20_000,
                        help="gold: characters between synthetic spans")
    parser.add_argument("--detect-only", action="store_true",
                        help="the detector's joint pass alone, without the index")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(detect_only(args.child, args.model, args.detector) if args.detect_only
                         else child(args.child, args.model, args.detector, args.span_every)))
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    tmp = None
    if args.model == "tiny":  # the tiny random Llama of the crash trials: the pipeline alone
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from crash_trials import make_fixture

        tmp = tempfile.TemporaryDirectory()
        args.model = str(make_fixture(Path(tmp.name), n_docs=1)[0])
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--detector", args.detector,
               "--span-every", str(args.span_every)]
        if args.model:
            cmd += ["--model", args.model]
        if args.detect_only:
            cmd.append("--detect-only")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{size} MB run failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if not args.json:
            row = rows[-1]
            print(f"{row['megabytes']:>6} MB  {row['tokens']:>9} tokens  "
                  f"{row['windows_in_document']:>6} windows  {row['mentions']:>7} mentions  "
                  f"baseline {row['baseline_peak_mb']:>7} MB  peak {row['peak_mb']:>7} MB  "
                  f"growth {row['growth_mb']:>6} MB (vectors {row['vectors_mb']} MB)  "
                  f"{row['seconds']} s", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per_mb = (b["growth_mb"] - a["growth_mb"]) / max(b["megabytes"] - a["megabytes"], 1e-9)
        print(f"growth per extra MB of text: {per_mb:.1f} MB "
              f"(model {a['model']}, detector {a['detector']}, {a['max_length']}-token windows, "
              f"torch threads {a['torch_threads']})")


if __name__ == "__main__":
    main()
