"""Small trained modules (projection head, mention tagger) saved sentence-transformers style:
a JSON config beside a safetensors file, never pickle."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from ner_retriever.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def state_checksum(module: nn.Module) -> str:
    """SHA-256 over the weights, so an index can tell if a module it recorded changed."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_folder(path: str | Path, module: nn.Module, config: BaseModel, config_name: str,
                weights_name: str, indent: int = 2) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path / weights_name))
    (path / config_name).write_text(config.model_dump_json(indent=indent) + "\n")
    return path


def read_folder(path: Path, config_cls: type[C], config_name: str, weights_name: str,
                what: str) -> tuple[C, dict[str, torch.Tensor]]:
    """Config and state dict of a saved folder; any problem is a ``ConfigError`` naming it."""
    cfg_file, weights = path / config_name, path / weights_name
    if not cfg_file.is_file() or not weights.is_file():
        raise ConfigError(f"{what}: {path} must contain {config_name} and {weights_name}")
    try:
        return config_cls.model_validate_json(cfg_file.read_text()), load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad folder
        raise ConfigError(f"{what}: cannot read {path}: {exc}") from exc


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Load weights into a module built from its config; a shape mismatch names the folder."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{what}: weights in {path} do not match its config: {exc}") from exc
    module.eval()
