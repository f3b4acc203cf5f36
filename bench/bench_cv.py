"""Choosing a learning rate on a small set: 5-fold cross-validation beside a single 80/20 split.

python bench/bench_cv.py [--train-rows 500] [--folds 5] [--rates 1.0e-4 3.0e-4] [--reference] [--out runs/bench_cv]

MiniLM (all-MiniLM-L6-v2, offline) on a seeded subset of SST-2 train, one epoch, max_length 64. For each
learning rate: `run.py cv` (mean and standard deviation of held-out accuracy over the folds) and one run that
holds out a stratified 20% (`data.validation_split: 0.2`) of the same rows. --reference also trains on all the
rows and scores GLUE's 872-sentence dev set: which rate was in fact better. Every step is `run.py` itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_choose import SST2, run, write
from bench_label_issues import recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0e-4, 3.0e-4])
    parser.add_argument("--reference", action="store_true", help="also train on all rows and score SST-2 validation")
    parser.add_argument("--seed", type=int, default=0, help="draws the rows")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_cv"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train = out / "train.csv"
    pd.read_csv(SST2 / "train.csv").sample(args.train_rows, random_state=args.seed).to_csv(train, index=False)

    results = []
    for rate in args.rates:
        name = f"lr{rate:g}"
        cv = recipe(train, out / name / "cv", False)
        cv["training"]["learning_rate"] = rate
        started = time.time()
        run(["cv", write(cv, out / name / "cv.yaml"), "--folds", args.folds])
        cv_s = time.time() - started
        accuracy = json.loads((out / name / "cv" / "cv.json").read_text())["validation"]["accuracy"]
        split = recipe(train, out / name / "split", False)
        split["data"]["validation_split"] = 0.2
        split["training"]["learning_rate"] = rate
        started = time.time()
        run([write(split, out / name / "split.yaml")])
        split_s = time.time() - started
        single = json.loads((out / name / "split" / "metrics.json").read_text())["validation"]["accuracy"]
        reference = None
        if args.reference:
            full = recipe(train, out / name / "reference", True)
            full["training"]["learning_rate"] = rate
            run([write(full, out / name / "reference.yaml")])
            reference = json.loads((out / name / "reference" / "metrics.json").read_text())["validation"]["accuracy"]
        results.append((rate, accuracy, single, reference, cv_s, split_s))

    print(f"\n## Learning rate on {args.train_rows} SST-2 rows: {args.folds}-fold CV and a single 80/20 split (MiniLM, 1 epoch)\n")
    header = "| learning rate | CV accuracy (mean ± std) | single-split accuracy |"
    header += " SST-2 validation accuracy (all rows) |" if args.reference else ""
    print(header + " CV time (s) | split time (s) |")
    print("|---:|---:|---:|" + ("---:|" if args.reference else "") + "---:|---:|")
    for rate, cv, single, reference, cv_s, split_s in results:
        shown = f" {reference:.4f} |" if reference is not None else ""
        print(f"| {rate:g} | {cv['mean']:.4f} ± {cv['std']:.4f} | {single:.4f} |{shown} {cv_s:.0f} | {split_s:.0f} |")
    best_cv = max(results, key=lambda r: r[1]["mean"])[0]
    best_single = max(results, key=lambda r: r[2])[0]
    print(f"\nChosen by CV: {best_cv:g}; chosen by the single split: {best_single:g}"
          + (f"; better on SST-2 validation: {max(results, key=lambda r: r[3])[0]:g}" if args.reference else ""))
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("cv", {
        **{f"cv_accuracy_{rate:g}": cv["mean"] for rate, cv, *_ in results},
        **{f"cv_std_{rate:g}": cv["std"] for rate, cv, *_ in results},
        **{f"single_accuracy_{rate:g}": single for rate, _, single, *_ in results},
        **{f"reference_accuracy_{rate:g}": reference for rate, _, _, reference, *_ in results if reference is not None},
        "chosen_by_cv": best_cv, "chosen_by_split": best_single,
    })


if __name__ == "__main__":
    main()
