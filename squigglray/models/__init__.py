"""Tokenizer and Llama-style models: built and trained locally, loaded by folder, preset or hub id.

Names resolve on first use (PEP 562): `squigglray.models.presets` (sizes only) imports neither torch
nor transformers, so configs that validate a preset stay cheap to import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from squigglray.lazy import lazy_names

_HOME = {
    "ModelNotFound": "loading", "load_model": "loading", "resolve_spec": "loading",
    "PRESETS": "presets", "UnknownPreset": "presets", "build_model": "presets", "count_params": "presets",
    "llama_config": "presets", "train_tokenizer": "tokenizer",
}
__getattr__, __all__ = lazy_names(__name__, _HOME)

if TYPE_CHECKING:
    from squigglray.models.loading import ModelNotFound, load_model, resolve_spec
    from squigglray.models.presets import PRESETS, UnknownPreset, build_model, count_params, llama_config
    from squigglray.models.tokenizer import train_tokenizer
