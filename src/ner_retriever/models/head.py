"""The contrastive projection head (paper: Linear -> SiLU -> Dropout 0.1 -> Linear, 500-d),
saved sentence-transformers style: ``head.json`` + ``head.safetensors``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from torch import nn

from ner_retriever.errors import ConfigError
from ner_retriever.io.weights import load_state, read_folder, save_folder, state_checksum

CONFIG_NAME = "head.json"
WEIGHTS_NAME = "head.safetensors"

NORM_FLOOR = 1e-12  # a zero vector stays zero instead of dividing by zero


class HeadConfig(BaseModel):
    """What the head was trained on top of; an index refuses a head made for other vectors."""

    model_config = ConfigDict(extra="forbid")

    input_dim: int
    hidden_dim: int = 500
    output_dim: int = 500
    dropout: float = 0.1
    residual: bool = False  # output = skip(x) + mlp(x): starts as a plain projection
    skip_bias: bool = False  # residual skip path has a bias (centring: identity init minus mean)
    model: str | None = None
    block: int | None = None
    # further blocks concatenated (EncoderConfig); not written for a single-block head
    extra_blocks: tuple[int, ...] | None = Field(default=None, exclude_if=lambda v: not v)
    component: str | None = None
    query_bias: bool = False  # queries get a learned offset first (closes the query/mention gap)
    query_template: str | None = None  # the template the head's queries were trained with


class ProjectionHead(nn.Module):
    """Parameter names match the paper's released state dict (``net.0``, ``net.3``).

    With ``residual=True`` a linear ``skip`` path is added to the MLP; ``training.fit.identity_init``
    sets it to the (centred) identity and zeroes ``net.3`` so the head starts as raw vectors."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.input_dim, config.hidden_dim),
            nn.SiLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.output_dim),
        )
        if config.residual:
            self.skip = nn.Linear(config.input_dim, config.output_dim, bias=config.skip_bias)
        if config.query_bias:
            self.query_bias = nn.Parameter(torch.zeros(config.input_dim))

    def forward(self, x: torch.Tensor, queries: bool = False) -> torch.Tensor:
        """Project raw vectors; ``queries=True`` for type descriptions (adds ``query_bias``)."""
        if queries and self.config.query_bias:
            x = x + self.query_bias
        y = self.net(x)
        if self.config.residual:
            y = y + self.skip(x)
        return nn.functional.normalize(y, dim=-1)

    @torch.inference_mode()
    def project(self, vectors: np.ndarray, queries: bool = False) -> np.ndarray:
        """Apply the head in eval mode to float32 numpy vectors (mentions, or ``queries``)."""
        was_training = self.training
        self.eval()
        out = self(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)),
                   queries=queries).numpy()
        self.train(was_training)
        return out

    def save(self, path: str | Path) -> Path:
        return save_folder(path, self, self.config, CONFIG_NAME, WEIGHTS_NAME)

    @classmethod
    def load(cls, path: str | Path, **overrides) -> ProjectionHead:
        """Load a saved head folder, or the paper's ``.pth`` state dict (no pickle execution)."""
        path = Path(path)
        if path.is_dir():
            config, state = read_folder(path, HeadConfig, CONFIG_NAME, WEIGHTS_NAME, "head")
        elif path.is_file():
            state = _load_state_dict(path)
            try:
                w0, w3 = state["net.0.weight"], state["net.3.weight"]
            except KeyError as exc:
                raise ConfigError(f"head: {path} has no {exc.args[0]!r} tensor") from exc
            config = HeadConfig(input_dim=w0.shape[1], hidden_dim=w0.shape[0], output_dim=w3.shape[0])
        else:
            raise ConfigError(f"head: no such file or directory {str(path)!r}")
        if overrides:
            config = config.model_copy(update=overrides)
        head = cls(config)
        load_state(head, state, path, "head")
        return head

    def project_queries(self, vectors: np.ndarray) -> np.ndarray:
        """Project raw query (type description) vectors: ``project(vectors, queries=True)``."""
        return self.project(vectors, queries=True)

    def checksum(self) -> str:
        """SHA-256 over the weights, so an index can tell if its head changed."""
        return state_checksum(self)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refusals come in many types
        raise ConfigError(f"head: cannot load {path} as a weights-only state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"head: {path} does not hold a state dict")
    return state


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows: what an index stores when there is no head."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), NORM_FLOOR)


def to_index_space(head: ProjectionHead | None, raw: np.ndarray,
                   queries: bool = False) -> np.ndarray:
    """Raw encoder vectors -> the space an index searches: the head (queries get its query
    offset) or, without one, plain L2 normalisation. Indexing, search, evaluation and the Ray
    workers all go through here, so mentions and queries are always projected alike."""
    if head is None:
        return normalize(raw)
    return head.project(raw, queries=queries)


def per_document(head: ProjectionHead | None, raw: list[np.ndarray], dim: int) -> list[np.ndarray]:
    """:func:`to_index_space` for each document's mentions (documents without any stay empty)."""
    return [to_index_space(head, r) if len(r) else np.zeros((0, dim), np.float32) for r in raw]


def confidence_scale(confidences, weight: float) -> np.ndarray:
    """``confidence ** weight`` per mention (a missing confidence counts as 1), float32."""
    conf = np.array([1.0 if c is None else c for c in confidences], dtype=np.float32)
    return conf ** np.float32(weight)


def describe(head: ProjectionHead | None) -> dict | None:
    """The head's identity as recorded in an index config (None = no head, raw vectors)."""
    if head is None:
        return None
    return {"checksum": head.checksum(), **json.loads(head.config.model_dump_json())}
