"""The quickstart as a new user runs it: wall time of `python run.py recipes/quickstart.yaml` and its test accuracy.

    python bench/bench_quickstart.py            # writes bench/results/quickstart.json

The time is the whole command (imports, data, training, evaluation, report), measured from outside the process.
Run it on idle cores: the load average before the run is recorded beside the figures, and another process
on the cores can double the time.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "quickstart"
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "run.py", "recipes/quickstart.yaml", f"training.output_dir={out}"],
            cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
        )
        wall = time.perf_counter() - started
        print(done.stdout, end="")  # the console README.md shows
        metrics = json.loads((out / "metrics.json").read_text())
    values = {
        "wall_s": round(wall),
        "test_accuracy": round(metrics["test"]["accuracy"], 4),
        "epochs_run": metrics["train"].get("epoch"),
        "load_average_before": round(load, 2),
    }
    record("quickstart", values)


if __name__ == "__main__":
    main()
