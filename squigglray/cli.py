"""The `squigglray` command.

    squigglray families list
    squigglray families sample mod_power -n 3 --difficulty hard --knob mod_max=97
    squigglray slice build --config squigglray/configs/slice.yaml
    squigglray slice rebuild data/slices/<slice_id>/manifest.json --out /tmp/rebuilt
    squigglray dcm run --config squigglray/configs/dcm_smoke.yaml --set k=32
    squigglray dcm sweep --config squigglray/configs/dcm_smoke.yaml --ks 4,8,16,32 --seeds 0,1
    squigglray train-base --set model.preset=nano --set train.steps=50
    squigglray quickstart [--smoke]
    squigglray dynamics --seeds 0,1,2 [--smoke] [--gpus-per-trial 1]
    squigglray probe --exp first-probe --base tiny --families mod_power,crt,stars_bars,gcd_lcm --seeds 0,1
    squigglray probe-confirm --exp first-probe --seeds 0,1,2
    squigglray solve "What is 17 * 23?" --n 8
    squigglray solve --file problems.csv --out submission.csv
    squigglray eval-solver --per-family 1 --ns 1,4,16
    squigglray serve --port 8000
    squigglray serve-verifiers --port 8000
"""

from __future__ import annotations

import typer

from squigglray import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ray-native math-reasoning LLM research.")


@app.command()
def version() -> None:
    """Print the package version."""
    print(__version__)


def forward(name: str, module: str, help: str) -> None:
    """Register `squigglray <name>` as the job module's own parser (entry.make_parser): every
    argument, --help included, goes to `<module>.main`, so the two paths are one."""

    @app.command(name, help=help, add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def _command(ctx: typer.Context) -> None:
        import importlib

        from squigglray.entry import run_main

        main = importlib.import_module(module).main
        run_main(lambda: main(list(ctx.args)))


forward("families", "squigglray.jobs.families",
        "Synthetic problem families: list them, describe one, sample instances.")
forward("quickstart", "squigglray.jobs.quickstart",
        "The main job: the 3-seed dynamics experiment, per-family held-out accuracy and a small solver "
        "evaluation of seed 0, then a probe sweep of its checkpoint ranked by DIS.")
forward("train-base", "squigglray.jobs.train_base",
        "Train the base model from scratch on the family mixture (a Ray task on the local or given cluster).")
forward("dynamics", "squigglray.jobs.dynamics",
        "Multi-seed training with geometry capture and probes (Ray Tune), then events, seed invariance, "
        "the probe/loss correlation tests and the reports. Run it again to continue an interrupted experiment.")


forward("probe", "squigglray.jobs.probe",
        "LoRA micro-finetune probes, family x seed on Ray Tune, scored by DIS and aggregated to Parquet. "
        "Run it again to add families or seeds: probes with a summary of the same config hash are skipped.")
forward("probe-confirm", "squigglray.jobs.probe_confirm",
        "Roadmap step 5: fine-tune on a DIS-curated corpus and on a random corpus of the same token budget, "
        "several seeds each, and compare them on the holdout.")
forward("slice", "squigglray.jobs.slice",
        "Dataset slices: candidate pools on Ray Data, manifests, holdouts (build, rebuild, show).")


forward("dcm", "squigglray.jobs.dcm",
        "DCM phase 1a: per-example soft-prompt optimization of a frozen LM (run: one staged run; "
        "sweep: K x seed x dataset trials on Ray Tune).")


# ----------------------------------------------------------------------------------------------
# the solver: solve, eval-solver, serve
# ----------------------------------------------------------------------------------------------
forward("solve", "squigglray.jobs.solve_cli",
        "Solve a problem (or every row of a CSV) with tool-integrated best-of-N sampling and a weighted vote.")
forward("eval-solver", "squigglray.jobs.eval_solver",
        "pass@1, maj@N and weighted-vote accuracy for several N, with and without code execution, on held-out "
        "family instances; writes solver_eval.{json,parquet,md} and plots/solver_accuracy.png.")
forward("serve", "squigglray.jobs.serve_solver",
        "Serve the solver over HTTP with Ray Serve: POST /solve, GET /healthz, OpenAI-compatible /v1.")
forward("serve-verifiers", "squigglray.jobs.serve_verifiers",
        "Serve the SymPy/Z3/math-verify tool verifiers over HTTP with Ray Serve: POST /verify/equivalence, "
        "/verify/z3, /tools/<op>; GET /tools, /healthz.")


forward("ineq", "squigglray.jobs.ineq",
        "Olympiad inequalities: generate, verify, split, baseline, SFT, eval (run: every step, each cached).")
forward("clmodel", "squigglray.jobs.clmodel",
        "CLModel: encoder -> RVQ -> conditioning -> reasoner -> decoder (train: staged training and milestones).")


if __name__ == "__main__":
    app()
