"""Tokenizer and Llama-style models: built and trained locally, loaded by folder, preset or hub id."""

from squigglray.models.loading import ModelNotFound, load_model, resolve_spec
from squigglray.models.presets import PRESETS, UnknownPreset, build_model, count_params, llama_config
from squigglray.models.tokenizer import train_tokenizer

__all__ = [
    "ModelNotFound", "PRESETS", "UnknownPreset", "build_model", "count_params", "llama_config",
    "load_model", "resolve_spec", "train_tokenizer",
]
