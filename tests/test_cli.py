import json

from typer.testing import CliRunner

from squigglray.cli import app

runner = CliRunner()


def test_families_list_and_describe():
    r = runner.invoke(app, ["families", "list"])
    assert r.exit_code == 0 and "mod_power" in r.output and "discrete_log" in r.output
    r = runner.invoke(app, ["families", "describe", "mod_power"])
    assert r.exit_code == 0 and json.loads(r.output)["family_id"] == "mod_power"


def test_families_sample_json_is_deterministic():
    args = ["families", "sample", "mod_power", "-n", "2", "--seed", "4", "--json", "--knob", "mod_max=97"]
    a, b = runner.invoke(app, args), runner.invoke(app, args)
    assert a.exit_code == 0 and a.output == b.output
    items = [json.loads(line) for line in a.output.splitlines()]
    assert len(items) == 2 and all(x["params"]["m"] <= 97 for x in items)


def test_unknown_family_and_bad_knob_are_clear():
    r = runner.invoke(app, ["families", "sample", "nope"])
    assert r.exit_code == 2 and "unknown family 'nope'" in r.output and "mod_power" in r.output
    r = runner.invoke(app, ["families", "sample", "mod_power", "--knob", "bogus=3"])
    assert r.exit_code == 2 and "no knob 'bogus'" in r.output
    r = runner.invoke(app, ["families", "sample", "mod_power", "--knob", "mod_max=x"])
    assert r.exit_code == 2 and "name=<integer>" in r.output
    r = runner.invoke(app, ["families", "sample", "mod_power", "--difficulty", "insane"])
    assert r.exit_code == 2 and "difficulty must be one of" in r.output
    assert "Traceback" not in r.output
