"""`load_model(spec)`: a local folder, a preset trained under the data dir, or a hub id."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a model is loaded: resolving a spec needs no transformers
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from squigglray.models.presets import PRESETS
from squigglray.paths import ArtifactStore


class ModelNotFound(FileNotFoundError):
    pass


def resolve_spec(spec: str, store: ArtifactStore | None = None) -> str:
    """Turn a spec into something from_pretrained accepts: a folder path or a hub id."""
    if Path(spec).is_dir():
        if not (Path(spec) / "config.json").is_file():
            raise ModelNotFound(f"{spec!r} is a folder but holds no config.json (not a save_pretrained folder)")
        return str(Path(spec).resolve())
    if spec in PRESETS:
        store = store or ArtifactStore()
        pointer = store.model_pointer(spec)
        if not store.exists(pointer):
            raise ModelNotFound(
                f"no trained {spec!r} model under {store.uri}; train one with "
                f"`squigglray train-base --preset {spec}` or `squigglray quickstart`"
            )
        return str(store.download_dir(store.read_json(pointer)["checkpoint"]))
    return spec  # a hub id


def load_model(spec: str, store: ArtifactStore | None = None, **kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_spec(spec, store)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except OSError as e:
        if Path(target).is_dir():
            raise
        raise ModelNotFound(
            f"could not load {spec!r} as a Hugging Face hub id ({e.__class__.__name__}). Without internet, "
            f"download it elsewhere (`hf download {spec} --local-dir DIR`), copy DIR here and pass "
            f"the folder, or point HF_HOME at a cache that holds it."
        ) from None
    return model, tokenizer
