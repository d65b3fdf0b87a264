"""Slice-pipeline metrics for the Ray dashboard and Prometheus (through ray.util.metrics).

The Ray Data stages of `squigglray.jobs.slice` run in worker processes; each process creates its
metrics once, on first use (`slice_metrics()`), and the node's metrics agent exports them as

    ray_squigglray_slice_rows_total{slice, stage, family}     rows seen per stage (counter)
    ray_squigglray_slice_batch_seconds_bucket{slice, stage}    wall time of one map_batches call
    ray_squigglray_slice_rows_per_second{slice, stage}         the driver's running throughput (gauge)

Stages of the slice build: `read` (raw rows into the annotate stage), `valid` / `invalid` (after
validation; valid rows by family), `candidate` (the per-batch survivors sent to the driver, by
family), `selected` (items written to the slice, by family). `family` is `all` where a stage has no
family. Rows/s of a stage is `rate(ray_squigglray_slice_rows_total[1m])`.

Any other map_batches stage can be counted without touching its function:

    ds.map_batches(Metered(my_fn, "verify", slice_name="ineq", family_column="family_id"), batch_format="pyarrow")
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ray.util import metrics

ALL = "all"
BATCH_BOUNDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]

_METRICS: "SliceMetrics | None" = None


class SliceMetrics:
    """The slice metrics of this process (driver or Ray Data worker)."""

    def __init__(self):
        self.rows = metrics.Counter("squigglray_slice_rows", "slice pipeline rows by stage and family",
                                    tag_keys=("slice", "stage", "family"))
        self.batch_seconds = metrics.Histogram("squigglray_slice_batch_seconds",
                                               "wall time of one slice map_batches call",
                                               boundaries=BATCH_BOUNDS, tag_keys=("slice", "stage"))
        self.rows_per_second = metrics.Gauge("squigglray_slice_rows_per_second",
                                             "rows per second of a running slice build (driver)",
                                             tag_keys=("slice", "stage"))

    def count(self, slice_name: str, stage: str, n: int, family: str = ALL) -> None:
        if n > 0:
            self.rows.inc(n, tags={"slice": slice_name, "stage": stage, "family": family or ALL})

    def count_by(self, slice_name: str, stage: str, counts: dict[str, int]) -> None:
        for family, n in counts.items():
            self.count(slice_name, stage, int(n), str(family) if family is not None else ALL)

    def count_batch(self, slice_name: str, stage: str, batch: Any, family_column: str | None = None) -> int:
        """Count a batch's rows (by `family_column` when given); returns the number of rows."""
        if family_column is None or family_column not in _columns(batch):
            n = num_rows(batch)
            self.count(slice_name, stage, n)
            return n
        counts = value_counts(batch, family_column)
        self.count_by(slice_name, stage, counts)
        return sum(counts.values())

    def batch_time(self, slice_name: str, stage: str, seconds: float) -> None:
        self.batch_seconds.observe(seconds, tags={"slice": slice_name, "stage": stage})

    def throughput(self, slice_name: str, stage: str, rows: int, seconds: float) -> None:
        self.rows_per_second.set(rows / seconds if seconds > 0 else 0.0, tags={"slice": slice_name, "stage": stage})


def slice_metrics() -> SliceMetrics:
    """This process's SliceMetrics, created on first use (never at import: importing must not need Ray)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = SliceMetrics()
    return _METRICS


# -- batches of any Ray Data format (pyarrow.Table, pandas.DataFrame, dict of numpy arrays) --------

def _columns(batch: Any) -> list[str]:
    if hasattr(batch, "column_names"):
        return list(batch.column_names)
    if hasattr(batch, "columns"):
        return list(batch.columns)
    return list(batch)


def num_rows(batch: Any) -> int:
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    if hasattr(batch, "shape"):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return len(next(iter(batch.values()))) if batch else 0
    return len(batch)


def value_counts(batch: Any, column: str) -> dict[str, int]:
    if hasattr(batch, "column_names"):  # pyarrow
        import pyarrow.compute as pc

        return {(v["values"].as_py() if v["values"].is_valid else ALL): v["counts"].as_py()
                for v in pc.value_counts(batch[column])}
    values = batch[column]
    out: dict[str, int] = {}
    for v in (values.tolist() if hasattr(values, "tolist") else values):
        key = ALL if v is None or v != v else str(v)  # None / NaN: no family
        out[key] = out.get(key, 0) + 1
    return out


# -- the slice build's annotate stage ---------------------------------------------------------

def record_annotate(slice_name: str, annotated: Any, reduced: Any, seconds: float) -> None:
    """One annotate+reduce batch: rows read, valid by family, invalid, candidates by family, time."""
    import pyarrow.compute as pc

    m = slice_metrics()
    m.count(slice_name, "read", annotated.num_rows)
    valid = annotated.filter(pc.is_null(annotated["invalid"]))
    m.count_by(slice_name, "valid", value_counts(valid, "family_id"))
    m.count(slice_name, "invalid", annotated.num_rows - valid.num_rows)
    items = reduced.filter(pc.equal(reduced["kind"], "item"))
    m.count_by(slice_name, "candidate", value_counts(items, "family_id"))
    m.batch_time(slice_name, "annotate", seconds)


class Metered:
    """A map_batches function that counts its output rows and times each call.

    Picklable when `fn` is a module-level function; Ray Data runs it as a plain task function.
    """

    def __init__(self, fn: Callable, stage: str, slice_name: str, family_column: str | None = None):
        self.fn, self.stage, self.slice_name, self.family_column = fn, stage, slice_name, family_column

    def __call__(self, batch: Any, *args, **kwargs) -> Any:
        t0 = time.perf_counter()
        out = self.fn(batch, *args, **kwargs)
        m = slice_metrics()
        m.count_batch(self.slice_name, self.stage, out, self.family_column)
        m.batch_time(self.slice_name, self.stage, time.perf_counter() - t0)
        return out
