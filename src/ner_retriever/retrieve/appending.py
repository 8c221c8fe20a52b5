"""Appending to an index: the settings a caller asks for must be the ones it was built with."""

from __future__ import annotations

from ner_retriever.detect.registry import build_detector
from ner_retriever.errors import ConfigError
from ner_retriever.indexes.base import store_settings
from ner_retriever.models.encoder import EncoderConfig


def check_append_settings(retriever, encoder=None, detector=None, head=None, store=None,
                          index_type=None, storage=None, uri=None, store_params=None,
                          hybrid=None, dense_model=None, names=None,
                          confidence_weight=None) -> None:
    """Refuse, naming the setting, what cannot change once an index exists."""
    cfg = retriever.index.config
    if confidence_weight is not None and confidence_weight != cfg.confidence_weight:
        raise ConfigError(f"index {retriever.index.path} weights mention vectors by confidence ** "
                          f"{cfg.confidence_weight}; that cannot change when appending")
    if hybrid is not None and hybrid != (cfg.dense is not None):
        raise ConfigError(f"index {retriever.index.path} was built "
                          f"{'with' if cfg.dense else 'without'} hybrid document vectors; "
                          f"that cannot change when appending")
    if names is not None and names != (cfg.names is not None):
        raise ConfigError(f"index {retriever.index.path} was built "
                          f"{'with' if cfg.names else 'without'} mention names; "
                          f"that cannot change when appending")
    asked = {"store": store, "index_type": index_type, "storage": storage}
    clash = {k: v for k, v in asked.items() if v is not None and getattr(cfg, k) != v}
    if clash or (uri is not None and store_settings(
            cfg.store, cfg.index_type, cfg.storage, uri, None,
            index_path=retriever.index.path)["uri"] != cfg.uri):
        raise ConfigError(f"index {retriever.index.path} uses store {cfg.store} ({cfg.index_type}, "
                          f"{cfg.storage}{', ' + cfg.uri if cfg.uri else ''}); store options "
                          f"cannot change when appending")
    if isinstance(encoder, EncoderConfig):
        wanted = {k: v for k, v in encoder.identity().items()
                  if v is not None and v != EncoderConfig.model_fields[k].default}
        have = retriever.encoder.config.identity()
        clash = {k: v for k, v in wanted.items() if have.get(k) != v}
        if clash:
            raise ConfigError(f"index {retriever.index.path} was built with "
                              f"{ {k: have[k] for k in clash} }; cannot add with {clash}")
    if isinstance(detector, str) and build_detector(detector).config() != retriever.detector.config():
        raise ConfigError(f"index {retriever.index.path} was built with detector "
                          f"{retriever.detector.config()}, not {detector!r}")
    if head not in (None, "auto"):
        raise ConfigError(f"index {retriever.index.path} already exists; its head cannot change")

