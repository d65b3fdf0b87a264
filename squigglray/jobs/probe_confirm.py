"""Confirmation experiment (seed 000 roadmap step 5) on a scored probe experiment: LoRA fine-tunes of the
same base on a DIS-curated corpus and on a random corpus of the same token budget, several seeds each,
compared on the holdout probe B (see squigglray/probes/confirm.py for how the corpora are chosen).

    python -m squigglray.jobs.probe_confirm --exp first-probe --seeds 0,1,2 --top 2 [--steps 24]

Runs the fine-tunes as the probe sweep's Ray Tune trials in experiments/<EXP>-confirm/ (its own plan and
summaries; run it again and only the missing ones run) and writes experiments/<EXP>/confirmation.json and
confirmation.md. The confirm plan's config hash covers the probe settings and both corpora, so changing
--top or --corpus-seed reruns the fine-tunes instead of mixing corpora.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squigglray.config import Seeds, config_hash
from squigglray.entry import JobArgs, add_model_arguments, make_parser as make_parser_for, parse_args, run_module
from squigglray.jobs.probe import SweepOptions, pending, run_trials
from squigglray.paths import ArtifactStore
from squigglray.probes.aggregate import read_summaries
from squigglray.probes.config import ProbeConfig
from squigglray.probes.confirm import ARMS, confirmation_markdown, confirmation_result, corpus_stats, corpus_targets
from squigglray.probes.plan import ProbePlan, read_plan, write_plan
from squigglray.schemas.probes import CORPUS_PREFIX, probe_id_for


class ConfirmArgs(BaseModel):
    """Which scored experiment to confirm, and how."""

    model_config = ConfigDict(extra="forbid")
    exp: str = Field(..., description="a scored probe experiment (required)")
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2], description="comma-separated distinct fine-tune seeds per arm")
    top: int = Field(2, description="families with the highest mean DIS that make the curated corpus")
    steps: int | None = Field(None, description="fine-tune steps (default: the probes')")
    corpus_seed: int = Field(0, description="seed of the corpora: their instances and the random mixture")
    data_dir: str | None = JobArgs.model_fields["data_dir"]


TRIAL_OPTIONS = ("cpus_per_trial", "gpus_per_trial")  # of SweepOptions: the confirmation's fine-tunes fit anywhere


def confirm_plan(plan: ProbePlan, scored, tokenizer, top_families: int, steps: int | None,
                 corpus_seed: int = 0) -> ProbePlan:
    """The probe plan of `<exp>-confirm`: same base, eval probes and settings (steps optionally), corpus targets."""
    cfg = plan.config
    if steps is not None:
        ft = {**cfg.finetune.model_dump(), "steps": steps}
        cfg = ProbeConfig.model_validate({**cfg.model_dump(), "finetune": ft})
    targets = corpus_targets(scored, plan, tokenizer, top_families, None, corpus_seed)
    chash = config_hash({"probe": cfg.shared_hash(plan.base.sha256),
                         "corpus": {k: t.slice_hash for k, t in sorted(targets.items())}})
    return ProbePlan(experiment_id=f"{plan.experiment_id}-confirm", config=cfg, config_hash=chash, base=plan.base,
                     eval_a=plan.eval_a, eval_b=plan.eval_b, targets=targets)


def run_confirmation(store_or_data_dir, exp_id: str, seeds: list[int], top_families: int = 2,
                     steps: int | None = None, opts: SweepOptions | None = None,
                     corpus_seed: int = 0) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from squigglray.jobs.ray_runtime import ensure_ray

    store = store_or_data_dir if isinstance(store_or_data_dir, ArtifactStore) else ArtifactStore(store_or_data_dir)
    plan = read_plan(store, exp_id)
    scored = [s for s in read_summaries(store, exp_id) if s.role != "corpus"]
    unscored = [s.probe_id for s in scored if s.dis is None]
    if not scored or unscored:
        raise ValueError(f"experiment {exp_id} has no scored summaries ({len(unscored)} without DIS, e.g. "
                         f"{unscored[:3]}); run the probe sweep to the end (its analysis scores them) first")
    tokenizer = AutoTokenizer.from_pretrained(plan.base.path)
    confirm = confirm_plan(plan, scored, tokenizer, top_families, steps, corpus_seed)
    cid = confirm.experiment_id
    specs = [{"target": CORPUS_PREFIX + a, "seed": s} for a in ARMS for s in seeds]
    todo = pending(store, cid, specs, confirm.config_hash)
    write_plan(store, confirm)
    print(f"confirmation {cid}: {len(specs)} fine-tunes, {len(specs) - len(todo)} already done, {len(todo)} to run")
    if todo:
        ensure_ray()
        run_trials(store, confirm, todo, (opts or SweepOptions()).resolved())
    wanted = {probe_id_for(p["target"], p["seed"]) for p in specs}
    summaries = [s for s in read_summaries(store, cid) if s.probe_id in wanted]
    result = confirmation_result(summaries)
    result.update(experiment_id=exp_id, confirm_experiment_id=cid, top_families=top_families,
                  corpus_seed=corpus_seed, steps=confirm.config.finetune.steps, config_hash=confirm.config_hash,
                  corpus=corpus_stats(confirm.targets, tokenizer))
    out = f"{store.experiment_dir(exp_id)}/confirmation"
    store.write_json(f"{out}.json", result)
    store.write_text(f"{out}.md", confirmation_markdown(result))
    print(result["verdict"])
    return result


def make_parser():
    """The parser of `python -m squigglray.jobs.probe_confirm` and of `squigglray probe-confirm`."""
    parser = make_parser_for("squigglray probe-confirm", __doc__, ConfirmArgs)
    add_model_arguments(parser, SweepOptions, "trial resources",
                        exclude=[f for f in SweepOptions.model_fields if f not in TRIAL_OPTIONS])
    parser.set_defaults(_models=(ConfirmArgs, SweepOptions))
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, opts = parse_args(make_parser(), argv)
    return run_confirmation(args.data_dir, args.exp, args.seeds, args.top, args.steps, opts, args.corpus_seed)


if __name__ == "__main__":
    run_module(__spec__.name)
