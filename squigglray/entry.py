"""One parser per workflow, built from its options models (trl's `make_parser` idea).

A workflow's options live in pydantic models; each field is declared once, with its default and
its help text (`Field(description=...)`). `make_parser` turns those models into the argparse
parser that both `python -m squigglray.jobs.<w>` and `squigglray <w>` run (cli.py only forwards
the arguments), so the two paths cannot drift: same flags, same defaults, same `--help`.

    class DynamicsArgs(BaseModel):
        seeds: list[int] = Field([0, 1, 2], description="one Ray Tune trial per seed")
    parser = make_parser("squigglray dynamics", __doc__, JobArgs, DynamicsArgs)
    job, dyn = parse_args(parser, argv)          # one validated model per group

Flags: a field `max_failures` is `--max-failures`; a bool is a switch (its default must be False);
a list is comma-separated (`--seeds 0,1,2`), or repeated when the field says
`json_schema_extra={"repeat": True}`; a dict is YAML/JSON (`--resources '{nvme: 1}'`);
`json_schema_extra={"flag": "--set"}` renames the flag, `{"positional": True}` makes it an argument
(`squigglray slice show SLICE_ID`). A workflow with verbs (`slice build|rebuild|show`) uses
`make_command_parser` and `parse_command`. Values are validated by the model, so a bad
one fails with the field's name before any work, exactly as in a YAML config.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from typing import Any, Callable, Sequence, TypeVar

from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

from squigglray.config import ConfigError, build_config

M = TypeVar("M", bound=BaseModel)


class JobArgs(BaseModel):
    """What every job takes besides its own options."""

    config: str | None = Field(None, description="YAML config file (default: the workflow's packaged config)",
                               json_schema_extra={"short": "-c"})
    overrides: list[str] = Field(default_factory=list, description="dotted override, e.g. train.steps=100 (repeatable)",
                                 json_schema_extra={"flag": "--set", "repeat": True, "metavar": "KEY=VALUE"})
    data_dir: str | None = Field(None, description="artifact root (default $SQUIGGLRAY_DATA or ./data)")
    verbose: bool = Field(False, description="Ray Tune's status tables and trial configs instead of one progress "
                                             "bar (every trial's results are in its folder either way)")


VERBOSE_ENV = "SQUIGGLRAY_VERBOSE"  # read by tune_spaces.progress: Tune's own tables instead of a progress bar


class TrainJobArgs(JobArgs):
    """What the jobs that train the base model take (quickstart, dynamics, train-base)."""

    smoke: bool = Field(False, description="the nano model, a few steps (the packaged smoke config)")
    no_reuse: bool = Field(False, description="start afresh even if this config already ran")

    def train_config(self):
        """The BaseTrainConfig these flags name: --config, else the packaged smoke or quickstart
        config; then each --set."""
        from squigglray.config import load_config, packaged_config
        from squigglray.training.config import BaseTrainConfig

        return load_config(BaseTrainConfig, self.config or packaged_config("smoke" if self.smoke else "quickstart"),
                           self.overrides)


def _extra(field) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _origin(annotation: Any) -> Any:
    """list/dict/bool/... of an annotation, looking through Optional and Annotated (config.Seeds)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _origin(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _origin(args[0]) if len(args) == 1 else None
    return origin or annotation


def _default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if value in (None, [], {}, False, ""):
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f" (default: {value})"


def _csv(text: str) -> list[str]:
    return [s for s in text.replace(" ", "").split(",") if s]


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"not valid YAML: {e}") from None


def add_model_arguments(parser: argparse.ArgumentParser, model: type[BaseModel], title: str | None = None,
                        exclude: Sequence[str] = ()) -> None:
    """One flag per field of `model` (rules in the module doc); unset flags keep the model's defaults."""
    group = parser.add_argument_group(title) if title else parser
    for name, field in model.model_fields.items():
        if name in exclude:
            continue
        extra = _extra(field)
        flags = [extra.get("flag", "--" + name.replace("_", "-"))] + ([extra["short"]] if "short" in extra else [])
        kind = _origin(field.annotation)
        help_text = (field.description or "") + ("" if kind is bool else _default_text(field))
        kw: dict[str, Any] = {"dest": f"{model.__name__}.{name}", "default": argparse.SUPPRESS, "help": help_text,
                              "metavar": extra.get("metavar", name.upper())}
        if extra.get("positional"):
            flags = [kw.pop("dest")]
            if field.default is not PydanticUndefined or field.default_factory is not None:
                kw["nargs"] = "?"
        if kind is bool:
            if field.default is not False:
                raise TypeError(f"{model.__name__}.{name}: a switch must default to False")
            kw["action"] = "store_true"
            del kw["metavar"]
        elif kind is list and extra.get("repeat"):
            kw["action"] = "append"
        elif kind is list:
            kw["type"] = _csv
        elif kind is dict:
            kw["type"] = _yaml
        group.add_argument(*flags, **kw)


def make_parser(prog: str, description: str | None, *models: type[BaseModel]) -> argparse.ArgumentParser:
    """The workflow's parser: the first paragraph of `description` (a module docstring) on top, the
    rest below the options; one argument group per model after the first, titled by the model's
    `model_config["title"]` (or its name)."""
    text = (description or "").strip()
    head, _, tail = text.partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=head, epilog=tail or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for i, model in enumerate(models):
        add_model_arguments(parser, model, None if i == 0 else model.model_config.get("title") or model.__name__)
    parser.set_defaults(_models=models)
    return parser


def make_command_parser(prog: str, description: str | None,
                        commands: dict[str, tuple[str, Sequence[type[BaseModel]]]]) -> argparse.ArgumentParser:
    """A workflow with verbs: `commands` maps each verb to (its one-line help, its options models)."""
    text = (description or "").strip()
    head, _, tail = text.partition("\n\n")
    parser = argparse.ArgumentParser(prog=prog, description=head, epilog=tail or None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="_command", required=True, metavar="COMMAND")
    for verb, (help_text, models) in commands.items():
        sub = verbs.add_parser(verb, help=help_text, description=help_text,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        for i, model in enumerate(models):
            add_model_arguments(sub, model, None if i == 0 else model.model_config.get("title") or model.__name__)
        sub.set_defaults(_models=tuple(models))
    return parser


def parse_command(parser: argparse.ArgumentParser,
                  argv: Sequence[str] | None = None) -> tuple[str, tuple[BaseModel, ...]]:
    """(verb, one validated model per options model of that verb)."""
    ns = parser.parse_args(argv)
    return ns._command, models_from(ns)


def models_from(ns: argparse.Namespace, *models: type[BaseModel]) -> tuple[BaseModel, ...]:
    """Validate the parsed flags into one instance per model (ConfigError names a bad field)."""
    given = vars(ns)
    out = []
    for model in models or given.get("_models", ()):
        prefix = f"{model.__name__}."
        data = {k[len(prefix):]: v for k, v in given.items() if k.startswith(prefix)}
        out.append(build_config(model, data))
    if any(getattr(m, "verbose", False) is True for m in out):
        os.environ[VERBOSE_ENV] = "2"
    return tuple(out)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> tuple[BaseModel, ...]:
    return models_from(parser.parse_args(argv))


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input: printed as one line naming the problem, exit status 2."""
    from squigglray.data.slice import SliceNotFound
    from squigglray.data.sources import SourceError
    from squigglray.dcm.data import DatasetError
    from squigglray.families import BadKnob, UnknownFamily
    from squigglray.models import ModelNotFound, UnknownPreset
    from squigglray.probes.aggregate import AggregationError
    from squigglray.schemas import SchemaMismatch
    from squigglray.solve.problems_csv import BadCsv

    return (ConfigError, BadKnob, UnknownFamily, ModelNotFound, UnknownPreset, SchemaMismatch, BadCsv,
            AggregationError, SourceError, SliceNotFound, DatasetError)


def fail(message: object, code: int = 2) -> typing.NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_main(body: Callable[[], Any]) -> Any:
    """Run a job's main body; a user error prints `error: ...` and exits 2 (the CLI's convention)."""
    try:
        return body()
    except Exception as e:  # user_errors() imports the domain (torch): not for --help's SystemExit
        if isinstance(e, user_errors()):
            fail(e)
        raise


def run_module(name: str) -> Any:
    """The body of every job module's `if __name__ == "__main__":` (pass `__spec__.name`).

    `python -m squigglray.jobs.slice` executes the file as `__main__`; whatever Ray pickles by
    reference from it (Ray Data stages, remote functions, their cached globals) would then be looked
    up as `__main__.<name>` on the workers and not found ("Can't get attribute '_stage' on <module
    '__main__'>"). So the job runs the `main` of the module imported under its real name."""
    import importlib

    return run_main(importlib.import_module(name).main)
