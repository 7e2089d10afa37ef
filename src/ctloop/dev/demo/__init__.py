"""`make demo`: the whole loop on the embedded default, with real components, in minutes.

What runs is what production runs, only with a clock that moves a day per step:

* the feature store is an embedded SQLite file and MLflow a local SQLite store, both under
  the demo folder (nothing to install or configure);
* Airflow runs the repository's real DAGs (`ct_<view>`, `monitor_<view>`) through
  `dag.test()` in one child process (`ctloop.dev.dagrunner`), with SQLite metadata;
* the BentoML service runs as `bentoml serve` with two workers, loads the champion from
  the registry, logs every answer to the feature store and hot-swaps on promotion (the CT
  DAG's promote step calls its admin endpoint);
* simulated days of customers are sent through the HTTP endpoint; a concept drift (the
  hidden scoring rule changes) starts part-way; labels land a day after their features;
  the monitor DAG runs after every day and, on drift or decay, the CT DAG run it queued is
  executed with the monitor's conf.

The demo view is a copy of the real one with a short window, one day of label delay, no
cooldown and fewer boosting rounds, so each CT run takes seconds. At the end it prints a
day-by-day timeline and draws live accuracy per day of the served (continuously trained)
model against the first champion scored on the same customers (never retrained). It
fails (non-zero exit) unless the loop closed: drift found, a drift-triggered model
promoted and served, every answer logged, and live accuracy recovered past the static
model's.

One module per job: `world` (settings, folder, view copy, environment), `traffic` (HTTP
requests and the waits after them), `scoring` (served, static and oracle accuracy),
`report` (day lines, verdict, timeline, plot) and `run` (the loop itself).
"""

from ctloop.dev.demo.report import timeline_table, verdict
from ctloop.dev.demo.run import run_demo
from ctloop.dev.demo.world import DayRecord, DemoConfig, prepare_folder

__all__ = ["DayRecord", "DemoConfig", "prepare_folder", "run_demo", "timeline_table", "verdict"]
