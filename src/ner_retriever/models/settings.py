"""What decides a mention vector (``EncoderConfig``: model, block(s), component, template),
validated once and recorded in every index; free of torch, so the CLI checks settings before a
model loads. The encoder itself is ``models.encoder``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ner_retriever.errors import ConfigError
from ner_retriever.models.loading import DEFAULT_MODEL

Component = Literal["query", "key", "value", "hidden"]

# Block chosen for the packaged models (see docs/PROBE.md); other models default to the middle.
DEFAULT_BLOCKS = {"smollm2-135m": 22, "gemma3-270m": 15, "minilm-l6": 5}
# Blocks whose same component is appended to the main block's for the packaged models when
# neither is given (two-block concatenation, docs/PROBE.md); none elsewhere.
DEFAULT_EXTRA_BLOCKS: dict[str, tuple[int, ...]] = {"gemma3-270m": (7,)}


class EncoderConfig(BaseModel):
    """Everything that decides what a vector means; recorded in the index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    block: int | None = Field(default=None, description="0-based block; None = model default")
    # The same component of further blocks, concatenated after the main block's (one forward
    # pass reads them all). None: the model's default when ``block`` is None too, else none.
    extra_blocks: tuple[int, ...] | None = None
    component: Component = "value"
    max_length: int = Field(default=512, ge=16, description="tokens per window")
    overlap: int = Field(default=128, ge=0, description="left context shared by windows")
    prepend_bos: bool = True
    # A bare description sits right after BOS, far from any mention's context; a short left
    # context roughly doubles R-Precision (docs/RESULTS.md, chosen on training types).
    query_template: str = "mentions of {}"

    @model_validator(mode="before")
    @classmethod
    def _block_list(cls, data):
        """``block="15+7"`` (the CLI's ``--layer 15+7``): block 15, extra_blocks (7,)."""
        block = data.get("block") if isinstance(data, dict) else None
        if isinstance(block, str):
            parts = block.split("+")
            if not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"block must be a block number or numbers joined by '+' "
                                 f"(e.g. 15 or 15+7), not {block!r}")
            if data.get("extra_blocks") is not None and len(parts) > 1:
                raise ValueError("give the extra blocks once: in block ('15+7') or in "
                                 "extra_blocks")
            data = {**data, "block": int(parts[0])}
            if len(parts) > 1:
                data["extra_blocks"] = tuple(int(p) for p in parts[1:])
        return data

    @field_validator("query_template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        if value.count("{}") != 1:
            raise ValueError("query_template must contain exactly one '{}'")
        return value

    @field_validator("extra_blocks")
    @classmethod
    def _distinct(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (len(set(value)) != len(value) or min(value, default=0) < 0):
            raise ValueError("extra_blocks must be distinct block numbers from 0")
        return value

    @property
    def targets(self) -> list[tuple[int, str]]:
        """The (block, component) activations a vector concatenates, main block first
        (resolved configs only: ``block`` set)."""
        return [(b, self.component) for b in (self.block, *(self.extra_blocks or ()))]

    @property
    def deepest(self) -> int:
        """The last block a vector needs (a pass stops there)."""
        return max(b for b, _ in self.targets)

    def identity(self) -> dict:
        """The fields that must match between an index and the encoder that queries it
        (``extra_blocks`` only where there are some, so older records still match)."""
        out = self.model_dump(include={"model", "block", "component", "prepend_bos",
                                       "query_template"})
        if self.extra_blocks:
            out["extra_blocks"] = list(self.extra_blocks)
        return out


def resolved_config(config: EncoderConfig, n_blocks: int) -> EncoderConfig:
    """``config`` with its block and extra blocks filled in and checked against the model."""
    block, extra = config.block, config.extra_blocks
    if extra is None:
        extra = DEFAULT_EXTRA_BLOCKS.get(config.model, ()) if block is None else ()
    if block is None:
        block = DEFAULT_BLOCKS.get(config.model, n_blocks // 2)
    for b in (block, *extra):
        if not 0 <= b < n_blocks:
            raise ConfigError(f"block {b} is out of range: model {config.model!r} has "
                              f"{n_blocks} blocks (0..{n_blocks - 1})")
    if block in extra:
        raise ConfigError(f"extra_blocks repeat the main block {block}")
    return config.model_copy(update={"block": block, "extra_blocks": tuple(extra)})
