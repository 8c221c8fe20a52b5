"""Optional LLM mention extractor: an instruction model copies the text and marks every entity
inline (``##Paris##``); the marks are parsed back to character offsets of the original text.

For users with a GPU and a capable instruction model (``llm:Qwen/Qwen2.5-7B-Instruct``); the
packaged ``smollm2-135m`` works offline but is far too small to mark entities well.

Models do not copy faithfully: they drop or add words, change spaces and quotes, forget a
closing mark, repeat an entity, list entities instead of copying, or mark names that are not in
the text at all.  ``parse_marked`` is built for that:

1. marks are paired left to right; a "pair" whose inside is empty, spans a line break, is
   longer than ``max_entity_chars`` or whose second mark can only open an entity (glued to the
   next word after a space: "##Macron in ##Paris##") is not a pair: its first mark is stray
   and pairing restarts at its second mark; stray and unpaired marks are dropped;
2. the output without marks is aligned with the original text (``difflib``, characters), and
   each marked piece is mapped through the alignment; it is kept when the mapped text equals the
   marked text (ignoring case and whitespace);
3. otherwise the marked text is searched in the original (case- and whitespace-insensitive),
   taking the occurrence nearest to where the alignment put it, so a repeated name maps to the
   right occurrence; a marked text that is nowhere in the original (hallucinated) is dropped.

Spans lose edge punctuation and quotes; overlaps keep the longer span.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ner_retriever.detect.base import resolve_overlaps, trim
from ner_retriever.errors import ConfigError
from ner_retriever.types import Document, Span

__all__ = ["DEFAULT_LLM", "LLMExtractor", "build_prompt", "parse_marked"]

DEFAULT_LLM = "smollm2-135m"
DEFAULT_MARK = "##"

PROMPT = (
    "Copy the text below exactly, but put {mark} before and after every named entity: every "
    "specific named thing such as people, organisations, places, products, works of art, "
    "events, laws, awards, diseases, drugs, species, vehicles, software and languages. Write "
    "nothing else.\n\nExample:\nText: Marie Curie won the Nobel Prize in Physics in Paris.\n"
    "Marked: {mark}Marie Curie{mark} won the {mark}Nobel Prize in Physics{mark} in "
    "{mark}Paris{mark}.\n\nText: {text}\nMarked:"
)


def build_prompt(text: str, mark: str = DEFAULT_MARK, prompt: str | None = None) -> str:
    """The instruction for one text: ``prompt`` (default :data:`PROMPT`) with ``{text}`` and
    ``{mark}`` filled in."""
    return (prompt or PROMPT).replace("{mark}", mark).replace("{text}", text)


def _squash(s: str) -> str:
    """Case- and whitespace-insensitive form used to compare marked and original text."""
    return "".join(s.split()).casefold()


def _pair_marks(output: str, mark: str, max_entity_chars: int) -> tuple[str, list[tuple[int, int]]]:
    """Remove every mark; return the clean output and the marked intervals in its coordinates."""
    positions = [m.start() for m in re.finditer(re.escape(mark), output)]
    kinds = {p: "stray" for p in positions}
    i = 0
    while i + 1 < len(positions):
        a, b = positions[i], positions[i + 1]
        inside = output[a + len(mark): b]
        if (inside.strip() and "\n" not in inside and len(inside) <= max_entity_chars
                and not _opens_only(output, b, mark)):
            kinds[a], kinds[b] = "open", "close"
            i += 2
        else:
            i += 1  # ``a`` is a stray mark: the next one may open a pair
    clean: list[str] = []
    intervals: list[tuple[int, int]] = []
    pos = length = start = 0
    for p in positions:
        clean.append(output[pos:p])
        length += p - pos
        pos = p + len(mark)
        if kinds[p] == "open":
            start = length
        elif kinds[p] == "close":
            intervals.append((start, length))
    clean.append(output[pos:])
    return "".join(clean), intervals


def _opens_only(output: str, p: int, mark: str) -> bool:
    """A mark glued to the next word after a space ("in ##Paris") can only open a pair."""
    before = output[p - 1] if p > 0 else " "
    after = output[p + len(mark)] if p + len(mark) < len(output) else " "
    return (before.isspace() or before in "([{\"'“‘") and after.isalnum()


def _at_word_edges(text: str, start: int, end: int) -> bool:
    """``text[start:end]`` neither starts nor ends inside a word ("Paris" in "Parisian")."""
    cut_left = start > 0 and text[start - 1].isalnum() and text[start].isalnum()
    cut_right = end < len(text) and text[end].isalnum() and text[end - 1].isalnum()
    return not (cut_left or cut_right)


def _find_all(text: str, entity: str) -> list[tuple[int, int]]:
    """Occurrences of ``entity`` in ``text``, ignoring case and whitespace, at word edges."""
    chars = "".join(entity.split())
    if not chars:
        return []
    pattern = r"\s*".join(re.escape(c) for c in chars)
    if chars[0].isalnum():
        pattern = r"(?<!\w)" + pattern
    if chars[-1].isalnum():
        pattern += r"(?!\w)"
    return [(m.start(), m.end()) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]


def parse_marked(text: str, output: str, mark: str = DEFAULT_MARK,
                 max_entity_chars: int = 120) -> list[Span]:
    """Character spans in ``text`` of the entities an LLM marked in ``output`` (see module doc).

    Returns sorted, non-overlapping spans; never raises on malformed output."""
    if not mark:
        raise ConfigError("the entity mark must be a non-empty string")
    clean, intervals = _pair_marks(output, mark, max_entity_chars)
    if not intervals or not text:
        return []
    # character alignment of the clean output with the original text
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, clean, text, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            mapping[block.a + k] = block.b + k
    spans: list[Span] = []
    cursor = 0  # where the previous entity ended in ``text``: repeated names map monotonically
    for cs, ce in intervals:
        entity = clean[cs:ce].strip()
        key = _squash(entity)
        if not key:
            continue
        mapped = [mapping[k] for k in range(cs, ce) if k in mapping]
        found: tuple[int, int] | None = None
        if mapped:
            s, e = min(mapped), max(mapped) + 1
            if _squash(text[s:e]) == key and _at_word_edges(text, s, e):
                found = (s, e)
        if found is None:
            hits = _find_all(text, entity)
            if hits:
                anchor = min(mapped) if mapped else cursor
                found = min(hits, key=lambda h: (abs(h[0] - anchor), h[0]))
        if found is None:
            continue  # hallucinated: not in the text
        s, e = trim(text, *found)
        if e > s:
            spans.append(Span(s, e))
            cursor = e
    return resolve_overlaps([spans])


def _chunks(text: str, max_chars: int) -> list[tuple[int, str]]:
    """Pieces of at most ``max_chars`` cut after a sentence end or line break, else a space."""
    out, pos = [], 0
    while pos < len(text):
        end = min(pos + max_chars, len(text))
        if end < len(text):
            window = text[pos:end]
            cut = max(window.rfind("\n"), *(window.rfind(p) for p in (". ", "! ", "? ")))
            if cut < max_chars // 2:
                cut = window.rfind(" ")
            if cut > 0:
                end = pos + cut + 1
        out.append((pos, text[pos:end]))
        pos = end
    return out


class LLMExtractor:
    """Detector that prompts a causal instruction model to mark entities inline.

    ``model``: packaged alias, Hugging Face id or local folder.  Greedy decoding; documents
    longer than ``max_chars`` are cut into pieces.  Loaded lazily on the first ``detect``."""

    name = "llm"

    def __init__(self, model: str = DEFAULT_LLM, mark: str = DEFAULT_MARK, max_chars: int = 1500,
                 batch_size: int = 4, max_new_tokens: int | None = None,
                 device: str | None = None, prompt: str | None = None) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"llm detector: model must be a non-empty string, got {model!r}")
        if not isinstance(mark, str) or not mark.strip() or any(c.isalnum() for c in mark):
            raise ConfigError(f"llm detector: the mark must be non-alphanumeric, got {mark!r}")
        for opt, val in (("max_chars", max_chars), ("batch_size", batch_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"llm detector: {opt} must be a positive integer, got {val!r}")
        if prompt is not None and (not isinstance(prompt, str) or "{text}" not in prompt):
            raise ConfigError("llm detector: a custom prompt must contain '{text}'")
        self.model_name, self.mark, self.max_chars = model.strip(), mark, max_chars
        self.prompt = prompt
        self.batch_size, self.max_new_tokens, self.device = batch_size, max_new_tokens, device
        self._model = self._tokenizer = None

    def __repr__(self) -> str:
        return f"LLMExtractor(model={self.model_name!r}, mark={self.mark!r})"

    def config(self) -> dict[str, Any]:
        cfg = {"name": self.name, "model": self.model_name, "mark": self.mark,
               "max_chars": self.max_chars, "batch_size": self.batch_size,
               "max_new_tokens": self.max_new_tokens}
        if self.prompt is not None:
            cfg["prompt"] = self.prompt
        return cfg

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ner_retriever.models.loading import (
            PACKAGED_MODELS,
            _gguf_cache_folder,
            load_model,
            resolve_model,
        )

        if self.model_name in PACKAGED_MODELS:
            location, gguf = resolve_model(self.model_name)
            folder = Path(location)
            if gguf is not None:  # the dequantised copy in the cache (made on first use)
                folder = _gguf_cache_folder(folder, gguf)
                if not (folder / "config.json").is_file():
                    load_model(self.model_name)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder)  # ties the output embedding
        else:
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                model = AutoModelForCausalLM.from_pretrained(self.model_name)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"llm detector: cannot load {self.model_name!r}: {exc}") from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda"):
            model.to(device, dtype=torch.bfloat16)
        else:
            model.to(device)
        model.eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model, self._tokenizer = model, tokenizer

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self._tokenizer
        prompt = build_prompt(text, self.mark, self.prompt)
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        return tok(prompt)["input_ids"]

    def generate(self, texts: Sequence[str]) -> list[str]:
        """The model's raw marked outputs, one per text."""
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        outputs: list[str] = []
        for b in range(0, len(texts), self.batch_size):
            chunk = list(texts[b: b + self.batch_size])
            prompts = [self._prompt_ids(t) for t in chunk]
            longest = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), longest), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(prompts):
                ids[i, longest - len(p):] = torch.tensor(p)
                mask[i, longest - len(p):] = 1
            text_tokens = max(len(tok(t, add_special_tokens=False)["input_ids"]) for t in chunk)
            new = self.max_new_tokens or int(text_tokens * 1.5) + 32
            with torch.inference_mode():
                gen = model.generate(input_ids=ids.to(model.device),
                                     attention_mask=mask.to(model.device), max_new_tokens=new,
                                     do_sample=False, pad_token_id=tok.pad_token_id)
            for row in gen[:, longest:]:
                outputs.append(tok.decode(row, skip_special_tokens=True).split("\nText:")[0])
        return outputs

    def detect(self, docs: Sequence[Document]) -> list[list[Span]]:
        docs = list(docs)
        pieces = [(i, off, piece) for i, d in enumerate(docs)
                  for off, piece in _chunks(d.text, self.max_chars) if piece.strip()]
        results: list[list[Span]] = [[] for _ in docs]
        if not pieces:
            return results
        marked = self.generate([p for _, _, p in pieces])
        for (i, off, piece), out in zip(pieces, marked, strict=True):
            results[i].extend(Span(s.start + off, s.end + off) for s in parse_marked(
                piece, out, self.mark))
        return [resolve_overlaps([r]) for r in results]


_LLM_KEYS = {"model", "mark", "max_chars", "batch_size", "max_new_tokens", "device", "prompt"}


def build_llm(cfg: dict[str, Any]) -> LLMExtractor:
    """``build_detector`` hook for ``{"name": "llm", ...}``."""
    unknown = set(cfg) - _LLM_KEYS
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)} for detector 'llm'; valid: "
                          f"{sorted(_LLM_KEYS)}")
    return LLMExtractor(**cfg)
