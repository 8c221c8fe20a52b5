"""Training and measuring: ``train`` (the projection head), ``train-detector``, ``evaluate``
(R-Precision per type) and ``probe`` (every block x component of the raw vectors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ner_retriever.choices import COMPONENTS
from ner_retriever.cli.common import (COMPONENT_HELP, ComponentOpt, JsonOption, LayerOption,
                                      MentionsOpt, ModelOption, SeedOption, err,
                                      friendly_errors, log, out, quiet_transformers,
                                      split_list, stage_progress)
from ner_retriever.config import check_query_template
from ner_retriever.detect.registry import DEFAULT_DETECTOR
from ner_retriever.errors import ConfigError


@friendly_errors
def train(
    data: Annotated[list[Path], typer.Argument(help="BIO/CoNLL training files (gold tags)")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for head.json + head.safetensors")],
    model: ModelOption = None,
    layer: LayerOption = None,
    component: Annotated[ComponentOpt, typer.Option(help=COMPONENT_HELP)] = ComponentOpt("value"),
    descriptions: Annotated[Optional[list[str]], typer.Option(help="JSON map: tag (or its fine part) -> description or list of paraphrases; or a shipped map name (fewnerd, multiconer2, wnut17); with --datasets: DATASET=MAP, repeatable (default: the shipped map named like the dataset)")] = None,
    query_template: Annotated[Optional[str], typer.Option(help="template queries are embedded in, e.g. 'mentions of {}' (default: the encoder's)")] = None,
    val_types: Annotated[Optional[list[str]], typer.Option("--val-types", help="held-out validation types (default: a seeded 20% of the types)")] = None,
    val_fraction: Annotated[float, typer.Option(help="share of types held out when --val-types is not given")] = 0.2,
    max_sentences: Annotated[Optional[list[int]], typer.Option(help="seeded sample of sentences: once for every file, or once per file (vectors are cached per sample)")] = None,
    epochs: Annotated[int, typer.Option(help="maximum epochs (selected on held-out types)")] = 30,
    steps_per_epoch: Annotated[int, typer.Option(help="batches per epoch (0 = one pass over the mentions)")] = 10,
    cv_folds: Annotated[int, typer.Option(help="choose the epoch count by cross-validation over type folds, then train on all types (0 or 1 = one held-out split with early stopping)")] = 5,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="mentions per type-balanced batch")] = 256,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature")] = 0.2,
    loss: Annotated[str, typer.Option(help="infonce | triplet")] = "infonce",
    patience: Annotated[int, typer.Option(help="epochs without improvement before stopping")] = 5,
    refit: Annotated[bool, typer.Option(help="retrain on all types for the selected epoch count")] = False,
    seed: Annotated[int, typer.Option(help="seed for sampling, type split and training")] = 0,
    negatives: Annotated[Optional[str], typer.Option(help=f"detector ('default' = {DEFAULT_DETECTOR}) run on the same samples: its spans that match no gold mention are negatives for every type (sentences a learned detector was trained on are left out)")] = None,
    negatives_partial: Annotated[bool, typer.Option("--negatives-partial", help="with --negatives: spans that only partly overlap a gold mention are negatives too")] = False,
    negatives_per_batch: Annotated[int, typer.Option(min=0, help="with --negatives: detected negatives drawn per step")] = 64,
    datasets: Annotated[Optional[str], typer.Option(help="dataset of each file, comma-separated (one name: all files), e.g. fewnerd,fewnerd,multiconer2,wnut17: types become dataset:tag, merged where the type mapping says 'same'")] = None,
    leave_out: Annotated[Optional[str], typer.Option(help="with --datasets: train a head judged on this dataset: its types and every type the mapping relates to them are dropped")] = None,
    judged_types: Annotated[Optional[Path], typer.Option(help="with --leave-out: a CoNLL/BIO file whose tags are the only judged types of that dataset (e.g. Few-NERD's test file); its other types stay")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="type mapping JSON (default: the shipped data/type_mapping.json)")] = None,
) -> None:
    """Train a projection head contrastively on gold mentions (types disjoint from evaluation)."""
    from ner_retriever.training.train import TrainConfig, run_training

    quiet_transformers()
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, temperature=temperature,
                         loss=loss, patience=patience, refit=refit, seed=seed,
                         val_fraction=val_fraction, val_types=val_types or None,
                         steps_per_epoch=steps_per_epoch or None,
                         cv_folds=0 if val_types else cv_folds,
                         negatives_per_batch=negatives_per_batch)
    if negatives_partial and not negatives:
        raise ConfigError("--negatives-partial needs --negatives DETECTOR")
    held_out = _leave_out(leave_out, judged_types, datasets)
    summary = run_training(data, out_dir, model=model, block=layer, component=component.value,
                           descriptions=descriptions, max_sentences=max_sentences or None,
                           data_seed=seed, config=config, query_template=query_template,
                           log=log, negatives=negatives, negatives_partial=negatives_partial,
                           datasets=split_list([datasets]) if datasets else None,
                           leave_out=held_out, mapping=mapping)
    if summary["negatives"]:
        err.print(f"{summary['negatives']['count']} detected negatives "
                  f"({summary['negatives']['detector']})")
    err.print(f"trained on {len(summary['train_types'])} types; selected epoch "
              f"{summary['best_epoch']}: held-out R-Precision "
              f"{summary['best_val_r_precision']:.3f} (initial head "
              f"{summary['raw_val_r_precision']:.3f}); head saved to {out_dir}")


def _leave_out(dataset: str | None, judged: Path | None, datasets: str | None):
    """``--leave-out`` / ``--judged-types`` as a :class:`LeaveOut` (None: keep every type)."""
    from ner_retriever.training.datasets import LeaveOut, judged_tags

    if dataset is None:
        if judged is not None:
            raise ConfigError("--judged-types needs --leave-out DATASET")
        return None
    if not datasets:
        raise ConfigError("--leave-out needs --datasets (the dataset of each file)")
    return LeaveOut(dataset.strip(), judged_tags(judged) if judged is not None else None)


def _feature_blocks(features: str | None) -> list[tuple[int, str]] | None:
    """``--features 4,8`` as (block, "hidden") pairs; ``None``: the model's default block."""
    if features is None:
        return None
    try:
        blocks = [(int(b), "hidden") for b in features.split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--features must be block numbers like 6 or 4,8, not "
                          f"{features!r}") from None
    if not blocks:
        raise ConfigError("--features needs at least one block")
    return blocks


@friendly_errors
def train_detector(
    data: Annotated[list[Path], typer.Argument(help="CoNLL/BIO TRAINING files (gold tags; every type becomes 'mention')")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="folder for detector.json + detector.safetensors")],
    model: ModelOption = None,
    features: Annotated[Optional[str], typer.Option(help="blocks whose output (hidden state) the head reads, e.g. 9 or 4,8 (default: the block at 30% of the model's depth, 9 for smollm2-135m)")] = None,
    max_sentences: Annotated[Optional[int], typer.Option(help="seeded sample of sentences per file (0 = all)")] = 1000,
    heldout: Annotated[float, typer.Option(help="share of each file's sample held out to choose the threshold")] = 0.1,
    mask_detector: Annotated[str, typer.Option(help="O tokens inside this detector's spans carry no loss (partial annotation); 'none' = off")] = "spacy-ents",
    target_recall: Annotated[float, typer.Option(help="held-out overlap recall the threshold must reach in every file")] = 0.93,
    threshold: Annotated[Optional[float], typer.Option(help="fixed decoding threshold instead of the --target-recall rule (held-out figures are reported at it)")] = None,
    epochs: Annotated[int, typer.Option(help="epochs (the best on held-out loss is kept)")] = 4,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (one-cycle)")] = 2e-3,
    batch_size: Annotated[int, typer.Option(help="sentences per training batch")] = 32,
    seed: Annotated[int, typer.Option(help="seed for sampling and training")] = 0,
    allow_eval_files: Annotated[bool, typer.Option("--allow-eval-files", help="permit known evaluation splits as training data")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write cached hidden states")] = False,
) -> None:
    """Train the learned mention detector (BIO head on the LM's early-block hidden states)."""
    from ner_retriever.training.detector import TrainDetectorConfig
    from ner_retriever.training.detector import train_detector as run_detector_training

    quiet_transformers()
    config = TrainDetectorConfig(
        features=_feature_blocks(features), max_sentences=max_sentences or None,
        heldout=heldout, mask_detector=None if mask_detector.lower() == "none" else mask_detector,
        target_recall=target_recall, threshold=threshold, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed)
    summary = run_detector_training(data, out_dir, model=model, config=config,
                                    allow_eval=allow_eval_files, cache=not no_cache, log=log)
    err.print(f"trained on {summary['sentences'] - summary['heldout_sentences']} sentences; best "
              f"epoch {summary['best_epoch']}, threshold {summary['threshold']}; detector saved "
              f"to {out_dir} ({summary['seconds']['total']} s)")


@friendly_errors
def evaluate(
    files: Annotated[list[Path], typer.Argument(help="CoNLL/BIO files; each sentence is a document")],
    descriptions: Annotated[Optional[str], typer.Option(help="JSON map {tag: description} or a shipped map: fewnerd, multiconer2, wnut17 (default: derived from the tag)")] = None,
    methods: Annotated[Optional[list[str]], typer.Option("--methods", help="comma-separated: ner-retriever,bm25,dense,hybrid,dense-mpnet (default: all but dense-mpnet, which needs pip install 'ner-retriever[mpnet]')")] = None,
    mentions: Annotated[MentionsOpt, typer.Option(help="gold spans (embedding quality) or detected (end to end)")] = MentionsOpt("gold"),
    detector: Annotated[str, typer.Option(help="detector for --mentions detected (names as for index, e.g. learned:FOLDER+spacy)")] = DEFAULT_DETECTOR,
    sample: Annotated[Optional[int], typer.Option(help="evaluate on a random sample of N sentences")] = None,
    group: Annotated[int, typer.Option(min=1, help="documents of N sentences: the (sampled) sentences shuffled with seed 0, every N consecutive ones joined; relevant when any sentence is")] = 1,
    seed: SeedOption = 0,
    model: ModelOption = None,
    layer: LayerOption = None,
    component: Annotated[ComponentOpt, typer.Option(help=COMPONENT_HELP)] = ComponentOpt("value"),
    head: Annotated[str, typer.Option(help="auto (the shipped head when it fits the encoder, as `index` does), none (raw vectors), or a head folder / .pth")] = "auto",
    query_template: Annotated[Optional[str], typer.Option(help="template around the description, e.g. 'Examples of {}' (default: the encoder's)")] = None,
    hybrid_weight: Annotated[Optional[float], typer.Option(help="weight of the mention score in hybrid (0..1)")] = None,
    names: Annotated[bool, typer.Option("--names/--no-names", help="hybrid: include the mention-name score, as a new hybrid index does")] = True,
    feedback: Annotated[Optional[int], typer.Option(min=0, help="hybrid: pseudo-relevance feedback from the first ranking's top N documents, as search does (0: off; default 20)")] = None,
    confidence_weight: Annotated[Optional[float], typer.Option(min=0.0, help="--mentions detected: mention vectors scaled by detector confidence ** W, as a new index stores them (default 0.5)")] = None,
    types: Annotated[Optional[list[str]], typer.Option("--type", help="evaluate only these tags (repeatable)")] = None,
    include_other: Annotated[bool, typer.Option(help="also evaluate catch-all tags (location-other, OtherPER, MISC)")] = False,
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write cached vectors")] = False,
    as_json: JsonOption = False,
) -> None:
    """Zero-shot retrieval quality (R-Precision per type) of ner-retriever, bm25, dense, hybrid."""
    from ner_retriever.config import CONFIDENCE_WEIGHT, FEEDBACK_DOCS, HYBRID_WEIGHT
    from ner_retriever.evaluation.data import group_sentences, load_eval_set
    from ner_retriever.evaluation.descriptions import load_descriptions
    from ner_retriever.evaluation.evaluate import DEFAULT_METHODS, EvalOptions
    from ner_retriever.evaluation.evaluate import evaluate as run_evaluation

    quiet_transformers()
    eval_set = group_sentences(load_eval_set(
        files, load_descriptions(descriptions), sample=sample, seed=seed,
        include_other=include_other, types=split_list(types)), group)
    opts = EvalOptions(methods=split_list(methods) or DEFAULT_METHODS,
                       mentions=mentions.value, detector=detector, model=model, block=layer,
                       component=component.value, head=head, query_template=query_template,
                       hybrid_weight=HYBRID_WEIGHT if hybrid_weight is None else hybrid_weight,
                       names=names, feedback=FEEDBACK_DOCS if feedback is None else feedback,
                       confidence_weight=CONFIDENCE_WEIGHT if confidence_weight is None
                       else confidence_weight, batch_size=batch_size,
                       cache=not no_cache)
    bar, update = stage_progress()
    with bar:
        report = run_evaluation(eval_set, opts, progress=update)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    _print_evaluation(report, eval_set)
    for note in _evaluation_notes(report, eval_set):
        err.print(note, highlight=False)


def _print_evaluation(report: dict, eval_set) -> None:
    """Per-type R-Precision of every method, the macro average last."""
    results = report["results"]
    table = Table(title=f"[bold]{report['dataset']}[/bold]: {report['documents']} documents, "
                        f"{report['types']} types, {report['mentions']} mentions")
    table.add_column("type")
    table.add_column("description")
    table.add_column("R", justify="right")
    for method in results:
        table.add_column(method, justify="right")
    for tag in eval_set.types:
        table.add_row(tag, eval_set.descriptions[tag][0], str(len(eval_set.relevant[tag])),
                      *(f"{results[m]['per_type'][tag]:.3f}" for m in results))
    table.add_section()
    table.add_row("[bold]macro[/bold]", "R-Precision", "",
                  *(f"[bold]{results[m]['r_precision']:.3f}[/bold]" for m in results))
    out.print(table)


def _evaluation_notes(report: dict, eval_set) -> list[str]:
    """The settings behind the figures and the detection recall, one line each."""
    notes = []
    if eval_set.skipped:
        notes.append(f"skipped catch-all tags: {', '.join(eval_set.skipped)}")
    settings = report["settings"]
    if "model" in settings:
        notes.append(f"ner-retriever: {settings['model']} block {settings['block']} "
                     f"{settings['component']}, head {settings['head'] or 'none'}, "
                     f"query template {settings['query_template']!r}")
    if "hybrid_weight" in settings:
        notes.append(f"hybrid weight on mentions: {settings['hybrid_weight']}, on mention names: "
                     f"{settings['name_weight'] or 'off'}; feedback documents: "
                     f"{settings['feedback_docs'] or 'off'}")
    if report["detection_recall"] and report["detection_recall"]["gold"]:
        rec = report["detection_recall"]
        precision = (f"; precision {rec['precision_exact']:.3f} exact, "
                     f"{rec['precision_overlap']:.3f} overlap" if rec["detected"] else "")
        notes.append(f"detection recall: {rec['exact']:.3f} exact, {rec['overlap']:.3f} overlap"
                     f"{precision} ({rec['detected']} detected spans, {rec['gold']} gold)")
    return notes


@friendly_errors
def probe(
    files: Annotated[list[Path], typer.Argument(help="CoNLL/BIO files with gold mentions")],
    model: ModelOption = None,
    descriptions: Annotated[Optional[str], typer.Option(help="JSON map {tag: description} or a shipped map name")] = None,
    blocks: Annotated[Optional[str], typer.Option(help="blocks to probe, e.g. 0-29 or 3,5,10 (default: all)")] = None,
    components: Annotated[Optional[list[str]], typer.Option(help="comma-separated subset of query,key,value,hidden")] = None,
    sample: Annotated[Optional[int], typer.Option(help="probe on a random sample of N sentences")] = None,
    seed: SeedOption = 0,
    query_template: Annotated[Optional[str], typer.Option(help="template around the description (default: the encoder's)")] = None,
    include_other: Annotated[bool, typer.Option(help="also score catch-all tags")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the JSON here")] = None,
    png: Annotated[Optional[Path], typer.Option(help="draw the heatmap here (needs matplotlib)")] = None,
    batch_size: Annotated[int, typer.Option(help="sentences per forward pass")] = 16,
    as_json: JsonOption = False,
) -> None:
    """Macro R-Precision of raw vectors for every block x component (one pass over the data)."""
    from ner_retriever.evaluation.data import load_eval_set
    from ner_retriever.evaluation.descriptions import load_descriptions
    from ner_retriever.evaluation.probe import parse_blocks, run_probe
    from ner_retriever.models.encoder import EncoderConfig, TransformerEncoder

    quiet_transformers()
    eval_set = load_eval_set(files, load_descriptions(descriptions), sample=sample, seed=seed,
                             include_other=include_other)
    check_query_template(query_template)
    settings = {"query_template": query_template} if query_template is not None else {}
    if model:
        settings["model"] = model
    encoder = TransformerEncoder(EncoderConfig(**settings))
    chosen = parse_blocks(blocks, encoder.n_blocks)
    comps = split_list(components) or list(COMPONENTS)
    bar, update = stage_progress()
    with bar:
        result = run_probe(eval_set, encoder, chosen, comps, batch_size=batch_size,
                           progress=update)
    _save_probe(result, output, png)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    _print_probe(result, comps)


def _save_probe(result: dict, output: Path | None, png: Path | None) -> None:
    """The JSON and the heatmap, where asked for."""
    from ner_retriever.evaluation.probe import draw_heatmap

    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    if png is not None:
        try:
            draw_heatmap(result, png)
        except ImportError:
            raise ConfigError("--png needs matplotlib: pip install matplotlib") from None


def _print_probe(result: dict, comps: list[str]) -> None:
    """One row per block, one column per component, and the best cell."""
    table = Table(title=f"[bold]{result['model']}[/bold] on {result['dataset']}: "
                        f"{result['documents']} documents, {result['types']} types "
                        f"(macro R-Precision, raw vectors)")
    table.add_column("block", justify="right")
    for c in comps:
        table.add_column(c, justify="right")
    for i, b in enumerate(result["blocks"]):
        table.add_row(str(b), *(f"{result['grid'][c][i]:.3f}" for c in comps))
    out.print(table)
    best = result["best"]
    err.print(f"best: block {best['block']} {best['component']} "
              f"({best['r_precision']:.3f})", highlight=False)
