"""The contrastive projection head (paper: Linear -> SiLU -> Dropout 0.1 -> Linear, 500-d),
saved sentence-transformers style: ``head.json`` + ``head.safetensors``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from torch import nn

from ner_retriever.errors import ConfigError

CONFIG_NAME = "head.json"
WEIGHTS_NAME = "head.safetensors"


class HeadConfig(BaseModel):
    """What the head was trained on top of; an index refuses a head made for other vectors."""

    model_config = ConfigDict(extra="forbid")

    input_dim: int
    hidden_dim: int = 500
    output_dim: int = 500
    dropout: float = 0.1
    residual: bool = False  # output = proj(x) + mlp(x): starts as a plain projection
    model: str | None = None
    block: int | None = None
    component: str | None = None


class ProjectionHead(nn.Module):
    """Parameter names match the paper's released state dict (``net.0``, ``net.3``)."""

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
            self.skip = nn.Linear(config.input_dim, config.output_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.config.residual:
            y = y + self.skip(x)
        return nn.functional.normalize(y, dim=-1)

    @torch.inference_mode()
    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Apply the head in eval mode to float32 numpy vectors."""
        was_training = self.training
        self.eval()
        out = self(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))).numpy()
        self.train(was_training)
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        (path / CONFIG_NAME).write_text(self.config.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, **overrides) -> ProjectionHead:
        """Load a saved head folder, or the paper's ``.pth`` state dict (no pickle execution)."""
        path = Path(path)
        if path.is_dir():
            cfg_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
            if not cfg_file.is_file() or not weights.is_file():
                raise ConfigError(f"head: {path} must contain {CONFIG_NAME} and {WEIGHTS_NAME}")
            try:
                config = HeadConfig.model_validate_json(cfg_file.read_text())
                state = load_file(str(weights))
            except Exception as exc:  # noqa: BLE001 - any parse failure is a bad head file
                raise ConfigError(f"head: cannot read {path}: {exc}") from exc
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
        try:
            head.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"head: weights in {path} do not match its config: {exc}") from exc
        head.eval()
        return head

    def checksum(self) -> str:
        """SHA-256 over the weights, so an index can tell if its head changed."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


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


def describe(head: ProjectionHead | None) -> dict | None:
    """The head's identity as recorded in an index config (None = no head, raw vectors)."""
    if head is None:
        return None
    return {"checksum": head.checksum(), **json.loads(head.config.model_dump_json())}
