"""Layer and component probe: macro R-Precision of raw vectors (gold mentions, no head) for
every block x component of a model, all read in ONE forward pass per batch of documents.

This reproduces the paper's layer analysis for any model; docs/PROBE.md records the run that
chose the default block and component of the packaged model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ner_retriever.choices import COMPONENTS
from ner_retriever.errors import ConfigError
from ner_retriever.models.head import normalize
from ner_retriever.evaluation.data import EvalSet
from ner_retriever.evaluation.metrics import evaluate_scores
from ner_retriever.evaluation.scoring import average_queries, mention_document_scores
from ner_retriever.evaluation.vectors import Progress, mention_vectors_for


def parse_blocks(spec: str | None, n_blocks: int) -> list[int]:
    """``"0-5,10,12"`` -> [0..5, 10, 12]; ``None``/``"all"`` -> every block."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return list(range(n_blocks))
    blocks: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                blocks.update(range(lo, hi + 1))
            else:
                blocks.add(int(part))
        except ValueError:
            raise ConfigError(f"--blocks: cannot read {part!r} (use e.g. 0-5,10)") from None
    bad = [b for b in blocks if not 0 <= b < n_blocks]
    if bad:
        raise ConfigError(f"--blocks: block {bad[0]} is out of range (0..{n_blocks - 1})")
    return sorted(blocks)


def query_targets(encoder, eval_set: EvalSet, targets: Sequence[tuple[int, str]]
                  ) -> dict[tuple[int, str], np.ndarray]:
    """Normalised query vectors per target (mean over each type's descriptions), one pass."""
    template = encoder.config.query_template
    texts, spans, groups = [], [], []
    for t in eval_set.types:
        groups.append(len(eval_set.descriptions[t]))
        for desc in eval_set.descriptions[t]:
            desc = desc.strip()
            start = template.index("{}")  # as encode_queries: the slot, not text.index(desc)
            text = template.replace("{}", desc, 1)
            texts.append(text)
            spans.append([(start, start + len(desc))])
    per_target = encoder.encode_targets(texts, spans, list(targets))
    return {t: average_queries(np.stack([v[0] for v in vecs]), groups)
            for t, vecs in zip(targets, per_target)}


def run_probe(eval_set: EvalSet, encoder, blocks: Sequence[int] | None = None,
              components: Sequence[str] = COMPONENTS, cache_root: Path | None = None,
              batch_size: int = 16, progress: Progress | None = None,
              cache_targets: Sequence[tuple[int, str]] | None = None) -> dict:
    """The grid ``{component: [macro R-Precision per block]}`` plus per-type scores.

    With ``cache_root``, cached mention vectors are reused and ``cache_targets`` (default:
    none, the grid is large) are written for later ``evaluate`` runs on the same data."""
    blocks = list(range(encoder.n_blocks)) if blocks is None else list(blocks)
    for c in components:
        if c not in COMPONENTS:
            raise ConfigError(f"unknown component {c!r}; choose from {', '.join(COMPONENTS)}")
    targets = [(b, c) for b in blocks for c in components]
    vectors, doc_index = mention_vectors_for(eval_set, encoder, eval_set.gold_spans, cache_root,
                                             "gold", targets=targets, batch_size=batch_size,
                                             progress=progress, save=list(cache_targets or []))
    queries = query_targets(encoder, eval_set, targets)
    grid = {c: [None] * len(blocks) for c in components}
    per_type = {}
    for b_idx, b in enumerate(blocks):
        for c in components:
            mentions = normalize(vectors[(b, c)])
            scores = mention_document_scores(queries[(b, c)], mentions, doc_index,
                                             len(eval_set.docs))
            result = evaluate_scores(eval_set, scores)
            grid[c][b_idx] = round(result["r_precision"], 4)
            per_type[f"{b}-{c}"] = {t: round(v, 4) for t, v in result["per_type"].items()}
            vectors.pop((b, c))  # free memory as we go
    best_c, best_i = max(((c, i) for c in components for i in range(len(blocks))),
                         key=lambda ci: grid[ci[0]][ci[1]])
    return {
        "model": encoder.config.model,
        "dataset": eval_set.name,
        "documents": len(eval_set.docs),
        "mentions": int(len(doc_index)),
        "types": len(eval_set.types),
        "type_list": eval_set.types,
        "skipped_types": eval_set.skipped,
        "query_template": encoder.config.query_template,
        **{k: v for k, v in eval_set.identity.items() if k != "files"},
        "blocks": blocks,
        "components": list(components),
        "grid": grid,
        "best": {"block": blocks[best_i], "component": best_c,
                 "r_precision": grid[best_c][best_i]},
        "per_type": per_type,
    }


# heatmap layout, in inches: a cell's width and height, margins for labels and title
MIN_WIDTH, CELL_WIDTH, WIDTH_MARGIN = 6.0, 0.42, 2.0
CELL_HEIGHT, PANEL_MARGIN = 0.55, 1.3
DPI = 130
CELL_FONT = 6.5  # points: the R-Precision printed in each cell


def draw_heatmap(result: dict | Sequence[dict], path: str | Path,
                 title: str | Sequence[str] | None = None,
                 mark: tuple[int, str] | None = None) -> Path:
    """Blocks across, components down, each cell annotated with its macro R-Precision.

    Several results (e.g. training types and test types) are drawn as stacked panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [result] if isinstance(result, dict) else list(result)
    titles = [title] if isinstance(title, str) or title is None else list(title)
    titles += [None] * (len(results) - len(titles))
    width = max(MIN_WIDTH, CELL_WIDTH * max(len(r["blocks"]) for r in results) + WIDTH_MARGIN)
    heights = [CELL_HEIGHT * len(r["components"]) + PANEL_MARGIN for r in results]
    fig, axes = plt.subplots(len(results), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, res, name in zip(axes[:, 0], results, titles):
        _panel(ax, fig, res, name, mark)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _panel(ax, fig, result: dict, title: str | None, mark) -> None:
    import matplotlib.pyplot as plt

    blocks, components = result["blocks"], result["components"]
    data = np.array([[np.nan if v is None else v for v in result["grid"][c]] for c in components])
    image = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(blocks)), [str(b) for b in blocks], fontsize=8)
    ax.set_yticks(range(len(components)), components)
    ax.set_xlabel("block (0-based)")
    for i in range(len(components)):
        for j in range(len(blocks)):
            if np.isfinite(data[i, j]):
                shade = "black" if data[i, j] > np.nanmean(data) else "white"
                text = f"{data[i, j]:.2f}"
                ax.text(j, i, text[1:] if text.startswith("0.") else text, ha="center",
                        va="center", fontsize=CELL_FONT, color=shade)
    if mark is not None and mark[0] in blocks and mark[1] in components:
        j, i = blocks.index(mark[0]), components.index(mark[1])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    fig.colorbar(image, ax=ax, label="macro R-Prec.", fraction=0.03, pad=0.01)
    ax.set_title(title or f"{result['model']} on {result['dataset']} "
                 f"({result['documents']} docs, {result['types']} types)", fontsize=10)
