"""Supervised fine-tuning on prompt/completion pairs with TRL's `SFTTrainer` (full fine-tune, no LoRA).

Each example is ``{"prompt": str, "completion": str}``; the loss covers only the completion tokens
(TRL builds the labels at dataset preparation: -100 over the prompt, token ids over the completion
and its EOS). The result is a save_pretrained folder that `squigglray.models.load_model(out_dir)`
opens, next to ``sft_summary.json``.

TRL 1.16 / transformers 5 specifics handled here (see the installed sources, not older docs):

* TRL's configs default to ``bf16=True`` and ``gradient_checkpointing=True``; on CPU bf16 is slow and
  noisy and checkpointing only costs time for models this small, so both are set explicitly (the
  latter under its transformers 5.2x name ``activation_checkpointing`` where that exists).
* transformers 5 dropped ``warmup_ratio``: ``warmup_steps`` < 1 is read as a ratio of the total steps.
* TRL appends ``tokenizer.eos_token`` to every completion that does not already end with it, so we
  never add it ourselves (that would train a double EOS).
* TRL tokenizes ``prompt`` and ``prompt + completion`` with the tokenizer's own special-token rule.
  The project's tokenizer never adds BOS but its models are trained and prompted with one in front
  (`engines.base.encode_prompt`), so the BOS text is prepended to prompts when the tokenizer does
  not add it itself.
* TRL's `DataCollatorForLanguageModeling` pads on the right whatever ``tokenizer.padding_side`` says,
  so a left-padding tokenizer (the project's, for generation) needs no change; it is saved as loaded.
* A tokenizer without a pad token gets pad = eos (padding positions get label -100 from the
  collator, so the EOS that ends a completion is still trained).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from squigglray.ineq.config import SftConfig

Example = dict[str, str]
LogFn = Callable[[str], Any]


def validate_examples(examples: list[dict], name: str = "train") -> list[Example]:
    """Check the prompt/completion contract up front: a bad row found by TRL's map is hard to trace."""
    if not isinstance(examples, list | tuple):
        raise ValueError(f"{name} must be a list of {{'prompt': str, 'completion': str}} dicts, "
                         f"got {type(examples).__name__}")
    out: list[Example] = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            raise ValueError(f"{name}[{i}] must be a dict with 'prompt' and 'completion', got {type(ex).__name__}")
        for field in ("prompt", "completion"):
            v = ex.get(field)
            if not isinstance(v, str) or not v.strip():
                got = "missing" if field not in ex else f"{type(v).__name__} {v!r:.40}"
                raise ValueError(f"{name}[{i}][{field!r}] must be a non-empty string, got {got}")
        out.append({"prompt": ex["prompt"], "completion": ex["completion"]})
    return out


def split_eval(train: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded held-out split, so that the same config always evaluates on the same examples."""
    n_eval = max(1, round(len(train) * fraction))
    if n_eval >= len(train):
        raise ValueError(f"eval_fraction={fraction} leaves no training examples out of {len(train)}")
    idx = list(range(len(train)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:n_eval])
    return [x for i, x in enumerate(train) if i not in held], [x for i, x in enumerate(train) if i in held]


def prepare_tokenizer(tokenizer, model) -> bool:
    """Pad = eos when the tokenizer has no pad; returns whether prompts need the BOS text in front."""
    if tokenizer.eos_token is None:
        raise ValueError("the tokenizer has no eos_token: SFT needs one to teach the model where a completion ends")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("x")["input_ids"][:1] != [bos]


def _with_bos(examples: list[Example], bos_text: str | None) -> list[Example]:
    if not bos_text:
        return examples
    return [{"prompt": x["prompt"] if x["prompt"].startswith(bos_text) else bos_text + x["prompt"],
             "completion": x["completion"]} for x in examples]


def _count_truncated(tokenizer, examples: list[Example], max_length: int) -> int:
    eos = tokenizer.eos_token
    texts = [x["prompt"] + x["completion"] + ("" if x["completion"].endswith(eos) else eos) for x in examples]
    return sum(len(ids) > max_length for ids in tokenizer(texts)["input_ids"])


def _checkpointing_arg(on: bool) -> dict[str, bool]:
    """TRL defaults `gradient_checkpointing=True`; transformers >= 5.2x renamed it `activation_checkpointing` and
    warns on the old name, which then only applies when the new one is unset."""
    from transformers import TrainingArguments

    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__:
        return {"activation_checkpointing": on}
    return {"gradient_checkpointing": on}


def _training_args(cfg: SftConfig, out_dir: str, has_eval: bool):
    from trl import SFTConfig

    steps = dict(max_steps=cfg.max_steps) if cfg.max_steps else dict(num_train_epochs=cfg.epochs)
    return SFTConfig(
        output_dir=out_dir,
        **steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not cfg.use_cuda(),
        bf16=cfg.use_bf16(),
        fp16=False,
        **_checkpointing_arg(cfg.gradient_checkpointing),
        # prompt/completion data, loss on the completion only, one example per row
        completion_only_loss=True,
        max_length=cfg.max_length,
        packing=False,
        padding_free=False,
        eval_strategy="steps" if (has_eval and cfg.eval_steps) else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=cfg.report_to,
        run_name=cfg.run_name or Path(out_dir).name,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cfg.use_cuda(),
    )


def build_trainer(cfg: SftConfig, train: list[dict], eval: list[dict] | None = None, out_dir: str = "sft-out",
                  store=None, log: LogFn | None = None):
    """The SFTTrainer that `run_sft` runs, not yet trained; its datasets are tokenized with labels.

    Exposed so that callers (and tests) can inspect exactly what TRL will train on:
    ``trainer.data_collator([trainer.train_dataset[i]])``. Returns (trainer, info)."""
    import datasets
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    from squigglray.models import load_model

    train = validate_examples(train, "train")
    if not train:
        raise ValueError("train is empty: SFT needs at least one prompt/completion example")
    if eval is not None:
        if cfg.eval_fraction:
            raise ValueError("pass either an eval set or cfg.eval_fraction, not both")
        eval = validate_examples(eval, "eval") or None
    elif cfg.eval_fraction:
        train, eval = split_eval(train, cfg.eval_fraction, cfg.seed)

    if cfg.report_to == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError("report_to='wandb' but wandb is not installed (pip install 'squigglray[wandb]')")
        os.environ.setdefault("WANDB_MODE", "offline")

    # fp32 master weights whatever the checkpoint's dtype: bf16 is applied as autocast by the Trainer
    model, tokenizer = load_model(cfg.model, store, dtype=torch.float32)
    bos_text = tokenizer.bos_token if prepare_tokenizer(tokenizer, model) else None
    train, eval = _with_bos(train, bos_text), (_with_bos(eval, bos_text) if eval else None)
    truncated = _count_truncated(tokenizer, train, cfg.max_length)
    if truncated and log:
        log(f"warning: {truncated}/{len(train)} training examples exceed max_length={cfg.max_length} tokens and are "
            f"truncated at the end (their EOS is lost)")

    callbacks = []
    if log is not None:
        class _Log(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                keep = {k: round(v, 4) if isinstance(v, float) else v for k, v in (logs or {}).items()
                        if k in ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy")}
                if keep:
                    log(f"sft step {state.global_step}/{state.max_steps}: {keep}")

        callbacks.append(_Log())

    args = _training_args(cfg, out_dir, eval is not None)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per map step of TRL's preparation is noise at this scale
    try:
        trainer = SFTTrainer(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(eval) if eval else None,
            callbacks=callbacks,
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    trainer.remove_callback(PrinterCallback)  # it prints every log dict raw; `log` gets a compact line instead
    kept = len(trainer.train_dataset)  # TRL drops rows whose completion is cut away entirely by max_length
    if kept < len(train) and log:
        log(f"warning: {len(train) - kept} training examples dropped: their prompt alone fills max_length")
    info = {"examples": kept, "dropped": len(train) - kept, "truncated": truncated,
            "eval_examples": len(trainer.eval_dataset) if eval else 0, "bos_prepended": bos_text is not None}
    return trainer, info


def _versions() -> dict[str, str]:
    import transformers
    import trl

    return {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def run_sft(cfg: SftConfig, train: list[dict], eval: list[dict] | None, out_dir: str, store=None,
            log: LogFn = print) -> dict:
    """Fine-tune `cfg.model` on the completions, save model + tokenizer to `out_dir`, return a summary.

    The summary (also written to ``out_dir/sft_summary.json``) holds the train loss curve, the eval
    loss before and after training (when there is an eval set), example/step/token counts (tokens:
    non-padding prompt + completion tokens trained on), the wall time of the training loop alone
    (``seconds``: no loading, tokenization or evaluation), tokens per second and the
    trl/transformers/torch versions."""
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        trainer, info = build_trainer(cfg, train, eval, out_dir, store, log)
        has_eval = trainer.eval_dataset is not None
        eval_before = trainer.evaluate()["eval_loss"] if (has_eval and cfg.eval_before) else None
        t0 = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - t0
        eval_after = trainer.evaluate()["eval_loss"] if has_eval else None
        trainer.model.save_pretrained(out_dir)
        trainer.processing_class.save_pretrained(out_dir)
    finally:
        torch.set_num_threads(old_threads)

    history = trainer.state.log_history
    tokens = int(getattr(trainer, "_total_train_tokens", 0))
    summary = {
        **info,
        "out_dir": str(Path(out_dir).resolve()),
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "train_loss": out.training_loss,
        "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "eval_curve": [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "eval_loss_before": eval_before,
        "eval_loss": eval_after,
        "device": "cuda" if cfg.use_cuda() else "cpu",
        "bf16": cfg.use_bf16(),
        "versions": _versions(),
        "config": cfg.model_dump(mode="json"),
    }
    Path(out_dir, "sft_summary.json").write_text(json.dumps(summary, indent=2))
    log(f"sft done: {summary['steps']} steps in {summary['seconds']:.1f}s ({summary['tokens_per_s']} tok/s), "
        f"eval loss {eval_before} -> {eval_after}; saved to {out_dir}")
    return summary

