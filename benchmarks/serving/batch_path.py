"""Where a `/predict_batch` record's CPU goes inside the service's own code, step by step.

    uv run python benchmarks/serving/batch_path.py --batch-size 1000 --repeats 30

The serving benchmark measures a whole server's CPU per batch record; this runs the same
steps the unlogged service runs for one batch body, in this process and without HTTP, on
a real CatBoost model registered the way the pipeline does (`world.register_version`):
the body's decode and column check (`checked_batch`), CatBoost's own call
(`Predictor.answer` on the checked frame, one thread), the answer fields per record
(`answers_of`), the answer objects with their request ids, and the answer's encoding.
What the server spends beyond their sum is BentoML's and the HTTP stack's (issue 19,
P3: the service's CPU per record at most 3x CatBoost's own predict).

Each step is timed alone (CPU time, median of `--repeats`), on the same body; the body
carries exactly `--batch-size` distinct records, checked before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))


def cpu_us_per_record(step: Callable[[], Any], records: int, repeats: int) -> float:
    """Median CPU time of `step` over `repeats` calls, in µs per record."""
    step()  # warm
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return statistics.median(times) / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-form", choices=("records", "split"), default="split")
    args = parser.parse_args()

    import mlflow
    import orjson
    from benchmarks.serving.serving_throughput import as_split, make_records
    from benchmarks.serving.world import register_version
    from serving.logrows import answers_of
    from serving.service import request_ids

    from ctloop.core.columnar import checked_batch
    from ctloop.core.predictor import Predictor
    from ctloop.features.view import load_view

    view = load_view("credit_score", ROOT / "features")
    with tempfile.TemporaryDirectory(prefix="ctloop-batch-path-") as tmp_name:
        tmp = Path(tmp_name)
        tracking = f"sqlite:///{tmp / 'mlflow.db'}"
        version = register_version(view, tracking, tmp / "mlartifacts")
        mlflow.set_tracking_uri(tracking)
        model = Predictor.load(view, f"models:/{view.name}/{version}", version)
        records = make_records(view, args.batch_size)
        document = as_split(records) if args.batch_form == "split" else {"records": records}
        body = orjson.dumps(document)
        n = args.batch_size
        checked = checked_batch(view, body, n)
        if checked is None or len(checked) != n:
            raise SystemExit("the body did not take the columnar path with every record")
        output = model.answer(checked.frame, thread_count=1)
        answers = answers_of(view, output)
        ids = request_ids(n)
        out = [{"request_id": i, **a} for i, a in zip(ids, answers, strict=True)]
        steps: dict[str, Callable[[], Any]] = {
            "decode + column check (checked_batch)": lambda: checked_batch(view, body, n),
            "CatBoost's own predict (Predictor.answer)": lambda: model.answer(
                checked.frame, thread_count=1
            ),
            "answer fields per record (answers_of)": lambda: answers_of(view, output),
            "request ids": lambda: request_ids(n),
            "answer objects with their ids": lambda: [
                {"request_id": i, **a} for i, a in zip(ids, answers, strict=True)
            ],
            "encoding the answer (orjson)": lambda: orjson.dumps(
                {"model_version": version, "predictions": out}
            ),
        }
        figures = {name: cpu_us_per_record(step, n, args.repeats) for name, step in steps.items()}
    total = sum(figures.values())
    catboost = figures["CatBoost's own predict (Predictor.answer)"]
    print(f"\n{n}-record {args.batch_form} body, {len(body):,} bytes; CPU µs per record, "
          f"medians of {args.repeats}\n")  # fmt: skip
    print("| step | µs per record |")
    print("|---|---:|")
    for name, us in figures.items():
        print(f"| {name} | {us:.2f} |")
    print(f"| **all steps, CatBoost's included** | **{total:.2f}** ({total / catboost:.1f}x "
          f"CatBoost's predict; without it {(total - catboost) / catboost:.1f}x) |")  # fmt: skip


if __name__ == "__main__":
    main()
