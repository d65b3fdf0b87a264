"""ProbeSummary probe_summary@2.0: round trip, version errors, and the exported JSON Schema file."""

from __future__ import annotations

import json

import jsonschema
import pytest
from probe_factory import make_summary
from pydantic import ValidationError

from squigglray.schemas.probes import JSON_SCHEMA_FILE, ProbeSummary, json_schema_text, probe_id_for


def test_round_trip_keeps_every_field():
    s = make_summary("mod_power", 3, [0.3, -0.4, 0.5],
                     events=[{"event_id": "e1", "metric": "loss", "layer": -1, "module": "scalar",
                              "kind": "mean_shift", "step": 5, "step_start": 4, "step_end": 6, "magnitude": 2.5,
                              "score": 1.7}])
    back = ProbeSummary.from_json(s.to_json())
    assert back == s
    assert json.loads(s.to_json())["schema"] == "probe_summary@2.0"
    assert back.direction() == s.direction()


def test_other_schema_version_names_both():
    data = json.loads(make_summary("crt", 0).to_json())
    data["schema"] = "probe_summary@1.0"
    with pytest.raises(ValidationError, match=r"probe_summary@2\.0.*probe_summary@1\.0"):
        ProbeSummary.model_validate(data)


def test_missing_and_extra_fields_are_rejected():
    data = json.loads(make_summary("crt", 0).to_json())
    del data["metrics"]
    with pytest.raises(ValidationError, match="metrics"):
        ProbeSummary.model_validate(data)
    data = json.loads(make_summary("crt", 0).to_json())
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ProbeSummary.model_validate(data)


def test_exported_json_schema_is_current_and_validates():
    assert JSON_SCHEMA_FILE.read_text() == json_schema_text(), \
        "run `python -m squigglray.schemas.probes` to refresh the exported JSON Schema"
    schema = json.loads(JSON_SCHEMA_FILE.read_text())
    good = json.loads(make_summary("gcd_lcm", 1).to_json())
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError, match="probe_summary@2.0"):
        jsonschema.validate({**good, "schema": "probe_summary@1.0"}, schema)


def test_probe_ids_are_file_names():
    assert probe_id_for("mod_power", 2) == "mod_power.seed2"
    assert probe_id_for("control:shuffled_labels", 0) == "control-shuffled_labels.seed0"
    assert probe_id_for("corpus:dis", 1) == "corpus-dis.seed1"
