"""Arrow schemas of the event artifacts (seed 000 §1.2, §4.2-4.3): one place, so writers and readers agree.

`events_candidates/<run_id>.parquet` (EVENTS_SCHEMA): per-run windowed candidates, not seed
consensus. One row per change point of one (metric, layer, module) series, plus composite rows
(`metric = "__composite__"`) where several metrics break in one window.

=====================  =========  ===============================================================
column                 type       meaning
=====================  =========  ===============================================================
event_id               string     stable id: "<run_id>:<metric>:<layer>:<module>:<kind>:<step>"
run_id                 string     run the event belongs to
seed                   int64      run seed
metric                 string     geometry metric (a key of geometry.METRICS), a scalar such as
                                  'loss', or '__composite__'
layer                  int64      block index; -1 = embedding output / non-layer; for composites
                                  the layer shared by all members, else -2 (several layers)
module                 string     matrix ('self_attn.q_proj', ...), 'hidden', 'scalar', or
                                  '__composite__'
kind                   string     'mean_shift' (level change) or 'slope_change' (kink);
                                  'composite' for composite rows
step                   int64      the change point: first optimizer step of the new regime
step_start             int64      captured step before the change point's grid cell
step_end               int64      captured step after it
step_frac              float64    step / max_steps (timeline alignment across runs)
magnitude              float64    standardized, signed shift: the level jump (mean_shift) or the
                                  change of slope per decade of steps (slope_change) of the
                                  z-scored series, from the trend-adjusted fit, divided by the
                                  residual sigma; composites: mean |magnitude| of the members
score                  float64    evidence: F statistic / calibrated penalty (> 1 = an event);
                                  composites: sum of member scores
penalty                float64    penalty (F units) used for this series; 0.0 for composites
n_points               int64      length of the resampled series
n_members              int64      1 for single-metric rows; number of member events for composites
members                string     JSON list of member event_ids ("[]" for single-metric rows)
diagnostics            string     JSON map; composites: {"<metric>|<layer>|<module>": {"magnitude":
                                  m, "score": s, "step": k}}; single rows: detector details
baseline_id            string     scoring baseline used (scoring_baselines/<id>.json) or ""
dataset_slice_hash     string     provenance
config_hash            string     provenance
package_version        string     provenance
=====================  =========  ===============================================================
"""

from __future__ import annotations

import pyarrow as pa

COMPOSITE = "__composite__"
KINDS = ("mean_shift", "slope_change", "composite")

EVENTS_SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("layer", pa.int64(), nullable=False),
    pa.field("module", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("step", pa.int64(), nullable=False),
    pa.field("step_start", pa.int64(), nullable=False),
    pa.field("step_end", pa.int64(), nullable=False),
    pa.field("step_frac", pa.float64(), nullable=False),
    pa.field("magnitude", pa.float64(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("penalty", pa.float64(), nullable=False),
    pa.field("n_points", pa.int64(), nullable=False),
    pa.field("n_members", pa.int64(), nullable=False),
    pa.field("members", pa.string(), nullable=False),
    pa.field("diagnostics", pa.string(), nullable=False),
    pa.field("baseline_id", pa.string(), nullable=False),
    pa.field("dataset_slice_hash", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("package_version", pa.string(), nullable=False),
])

# experiments/<EXP_ID>/event_families.parquet: events matched across seeds (seed invariance, §4.3)
EVENT_FAMILIES_SCHEMA = pa.schema([
    pa.field("family_id", pa.string(), nullable=False),      # "<metric>|<layer>|<module>|<kind>|<sign>|<k>"
    pa.field("metric", pa.string(), nullable=False),
    pa.field("layer", pa.int64(), nullable=False),
    pa.field("module", pa.string(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("sign", pa.int64(), nullable=False),            # sign of magnitude: +1 / -1
    pa.field("t_center", pa.float64(), nullable=False),      # aligned time (mean over members)
    pa.field("t_spread", pa.float64(), nullable=False),      # max - min aligned time of members
    pa.field("step_center", pa.float64(), nullable=False),   # mean step of members
    pa.field("support", pa.int64(), nullable=False),         # distinct seeds
    pa.field("n_seeds", pa.int64(), nullable=False),         # seeds in the experiment
    pa.field("seeds", pa.string(), nullable=False),          # JSON list of seeds
    pa.field("event_ids", pa.string(), nullable=False),      # JSON list of member event_ids
    pa.field("mean_magnitude", pa.float64(), nullable=False),
    pa.field("structural", pa.bool_(), nullable=False),      # support >= 2
])
