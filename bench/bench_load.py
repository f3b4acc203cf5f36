"""Load cases from the reliability issue: a 5 MB review, 100k short rows, 1,000 labels.

python bench/bench_load.py [--rows 100000]

Each case is a real `run.py` process (a tiny BERT with MiniLM's tokenizer, a few dozen steps, so the
numbers measure the data path, tokenization, label handling and evaluation, not model size). Prints
wall time and the process's peak RSS; the point is that none of them blows memory.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tiny import tiny_bert


def tiny_model(folder: Path) -> str:
    """A 2-layer, 32-wide BERT initialised from scratch (no pretraining), with MiniLM's tokenizer."""
    return tiny_bert(folder, hidden=32, max_positions=512)


def words(rng: random.Random, n: int) -> str:
    vocab = ["film", "plot", "actor", "scene", "great", "awful", "music", "long", "story", "ending", "camera", "role"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def run_case(name: str, frame: pd.DataFrame, model: str, work: Path, data_extra: dict, training_extra: dict) -> dict:
    train = work / f"{name}.csv"
    frame.to_csv(train, index=False)
    recipe = {
        "model": {"name_or_path": model},
        "data": {"train_file": str(train), "validation_split": 0.1, "max_length": 128, **data_extra},
        "preprocess": ["drop_empty", "dedupe"],
        "training": {"output_dir": str(work / f"run-{name}"), "max_steps": 30, "per_device_train_batch_size": 32,
                     "per_device_eval_batch_size": 256, "save_strategy": "no", "eval_strategy": "no",
                     "report_to": "none", "disable_tqdm": True, **training_extra},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    started = time.time()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:  # sample RSS every 50 ms: a fresh interpreter per case, so each peak is its own
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    err = proc.stderr.read()
    wall = time.time() - started
    metrics_path = work / f"run-{name}" / "metrics.json"
    sizes = json.loads(metrics_path.read_text())["data"]["sizes"] if metrics_path.exists() else {}
    return {
        "case": name,
        "rows in": len(frame),
        "train rows after pipeline": sizes.get("train", "-"),
        "status": "finished" if proc.returncode == 0 else f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}",
        "wall s": round(wall, 1),
        "peak RSS MB": round(peak / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_model(work / "tiny")
        rows = []
        big = words(rng, 900_000)  # about 5 MB of text in one review
        huge = pd.DataFrame({"text": [big] + [words(rng, 40) + f" {i}" for i in range(199)], "label": [i % 2 for i in range(200)]})
        rows.append(run_case("5 MB review", huge, model, work, {"max_chars": 10_000_000}, {}))
        short = pd.DataFrame({"text": [words(rng, rng.randint(3, 12)) + f" {i}" for i in range(args.rows)],
                              "label": [i % 2 for i in range(args.rows)]})
        rows.append(run_case(f"{args.rows:,} short rows", short, model, work, {}, {}))
        many = pd.DataFrame({"text": [words(rng, 10) + f" {i}" for i in range(20_000)], "label": [f"label_{i % 1000}" for i in range(20_000)]})
        rows.append(run_case("1,000 labels (20k rows)", many, model, work, {}, {"eval_strategy": "no"}))
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("load", {"cases": rows})


if __name__ == "__main__":
    main()
