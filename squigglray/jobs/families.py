"""The synthetic problem families: list them, describe one, sample instances (no Ray, no model).

    squigglray families list
    squigglray families describe discrete_log
    squigglray families sample mod_power -n 3 --difficulty hard --knob mod_max=97 [--json]
    python -m squigglray.jobs.families sample stair_climb -n 2 --seed 3

The same arguments give the same instances, anywhere (squigglray.families.sample).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squigglray.entry import make_command_parser, parse_command, run_module


class ListArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DescribeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = Field(description="a family id (see `squigglray families list`)",
                        json_schema_extra={"positional": True})


class SampleArgs(DescribeArgs):
    n: int = Field(3, ge=1, description="number of instances", json_schema_extra={"flag": "-n"})
    seed: int = Field(0, description="sampling seed")
    difficulty: str = Field("easy", description="easy | medium | hard")
    knob: list[str] = Field(default_factory=list, description="override a knob: name=value (repeatable)",
                            json_schema_extra={"repeat": True, "metavar": "NAME=VALUE"})
    as_json: bool = Field(False, description="one JSON object per line", json_schema_extra={"flag": "--json"})


COMMANDS = {
    "list": ("List the registered families with their target types and knobs.", [ListArgs]),
    "describe": ("Show a family's knobs, ranges and solution strategy as JSON.", [DescribeArgs]),
    "sample": ("Sample instances of a family (the same arguments give the same instances, anywhere).",
               [SampleArgs]),
}


def make_parser():
    """The parser of `python -m squigglray.jobs.families` and of `squigglray families`."""
    return make_command_parser("squigglray families", __doc__, COMMANDS)


def parse_knobs(pairs: list[str]) -> dict[str, int]:
    from squigglray.families import BadKnob

    out = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = int(value)
        except ValueError:
            raise BadKnob(f"--knob {p!r} must look like name=<integer>") from None
    return out


def print_list() -> None:
    from rich.console import Console
    from rich.table import Table

    from squigglray.families import describe, list_families

    t = Table(title="problem families")
    for col in ("family_id", "target type", "knobs (easy/medium/hard)", "title"):
        t.add_column(col)
    for fid in list_families():
        d = describe(fid)
        knobs = ", ".join(f"{k}={v['easy']}/{v['medium']}/{v['hard']}" for k, v in d["knobs"].items())
        t.add_row(fid, d["target_type"], knobs, d["title"])
    Console().print(t)


def print_sample(args: SampleArgs) -> None:
    from rich.console import Console

    from squigglray.families import sample

    console = Console()
    for x in sample(args.family, args.n, args.seed, args.difficulty, parse_knobs(args.knob)):
        if args.as_json:
            print(x.model_dump_json(by_alias=True))
        else:
            console.rule(f"{x.instance_id}  answer={x.answer}")
            console.print(x.problem, markup=False, highlight=False)
            console.print(x.trace, markup=False, highlight=False)


def main(argv: list[str] | None = None) -> Any:
    command, (args,) = parse_command(make_parser(), argv)
    if command == "list":
        print_list()
    elif command == "describe":
        from squigglray.families import describe

        print(json.dumps(describe(args.family), indent=2))
    else:
        print_sample(args)


if __name__ == "__main__":
    run_module(__spec__.name)
