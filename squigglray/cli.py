"""The `squigglray` command.

    squigglray families list
    squigglray families sample mod_power -n 3 --difficulty hard --knob mod_max=97
    squigglray train-base --set model.preset=nano --set train.steps=50
    squigglray quickstart [--smoke]
"""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from squigglray import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ray-native math-reasoning LLM research.")
families_app = typer.Typer(no_args_is_help=True, help="Synthetic problem families.")
app.add_typer(families_app, name="families")
console = Console()
err = Console(stderr=True)


def _user_errors() -> tuple[type[Exception], ...]:
    from squigglray.config import ConfigError
    from squigglray.families import BadKnob, UnknownFamily
    from squigglray.models import ModelNotFound, UnknownPreset
    from squigglray.schemas import SchemaMismatch

    return (ConfigError, BadKnob, UnknownFamily, ModelNotFound, UnknownPreset, SchemaMismatch)


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    raise typer.Exit(2)


def _run(fn, *args, **kwargs):
    """Call fn; user errors (bad config, unknown family, bad knob...) print one clear line, exit 2."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as e:
        _fail(e)


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(__version__)


@families_app.command("list")
def families_list() -> None:
    """List the registered families with their target types and knobs."""
    from squigglray.families import describe, list_families

    t = Table(title="problem families")
    for col in ("family_id", "target type", "knobs (easy/medium/hard)", "title"):
        t.add_column(col)
    for fid in list_families():
        d = describe(fid)
        knobs = ", ".join(f"{k}={v['easy']}/{v['medium']}/{v['hard']}" for k, v in d["knobs"].items())
        t.add_row(fid, d["target_type"], knobs, d["title"])
    console.print(t)


@families_app.command("describe")
def families_describe(family: str) -> None:
    """Show a family's knobs, ranges and solution strategy as JSON."""
    from squigglray.families import describe

    console.print_json(json.dumps(_run(describe, family)))


def _parse_knobs(pairs: list[str]) -> dict[str, int]:
    from squigglray.families import BadKnob

    out = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = int(value)
        except ValueError:
            _fail(BadKnob(f"--knob {p!r} must look like name=<integer>"))
    return out


@families_app.command("sample")
def families_sample(
    family: str,
    n: int = typer.Option(3, "-n", help="number of instances"),
    seed: int = typer.Option(0, help="sampling seed"),
    difficulty: str = typer.Option("easy", help="easy | medium | hard"),
    knob: list[str] = typer.Option([], help="override a knob: name=value (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Sample instances of a family (the same arguments give the same instances, anywhere)."""
    from squigglray.families import sample

    items = _run(sample, family, n, seed, difficulty, _parse_knobs(knob))
    for x in items:
        if as_json:
            print(x.model_dump_json(by_alias=True))
        else:
            console.rule(f"{x.instance_id}  answer={x.answer}")
            console.print(x.problem, markup=False, highlight=False)
            console.print(x.trace, markup=False, highlight=False)


def _load_train_config(config: Optional[str], overrides: list[str], default: str):
    from squigglray.config import load_config
    from squigglray.jobs.quickstart import packaged_config
    from squigglray.training import BaseTrainConfig

    return _run(load_config, BaseTrainConfig, config or packaged_config(default), overrides)


ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file")
SetOpt = typer.Option([], "--set", help="dotted override, e.g. train.steps=100 (repeatable)")
DataDirOpt = typer.Option(None, "--data-dir", help="artifact root (default $SQUIGGLRAY_DATA or ./data)")


@app.command("train-base")
def train_base_cmd(
    config: Optional[str] = ConfigOpt,
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_reuse: bool = typer.Option(False, "--no-reuse", help="train even if this config already ran"),
) -> None:
    """Train the base model from scratch on the family mixture (a Ray task on the local or given cluster)."""
    from squigglray.jobs.quickstart import train_or_reuse
    from squigglray.jobs.ray_runtime import ensure_ray
    from squigglray.paths import ArtifactStore

    cfg = _load_train_config(config, overrides, "quickstart")
    ensure_ray()
    rec, _ = _run(train_or_reuse, cfg, ArtifactStore(data_dir), not no_reuse)
    console.print_json(rec.to_json())


@app.command()
def quickstart(
    smoke: bool = typer.Option(False, "--smoke", help="nano model, a few steps: about a minute"),
    config: Optional[str] = ConfigOpt,
    overrides: list[str] = SetOpt,
    data_dir: Optional[str] = DataDirOpt,
    no_reuse: bool = typer.Option(False, "--no-reuse", help="train even if this config already ran"),
) -> None:
    """The main job: train (or reuse) the tiny model, then print per-family held-out accuracy."""
    from squigglray.jobs.quickstart import quickstart as run

    cfg = _load_train_config(config, overrides, "smoke" if smoke else "quickstart")
    _run(run, cfg, data_dir, not no_reuse)


if __name__ == "__main__":
    app()
