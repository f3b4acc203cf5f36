"""Real-data checks of the heads, printed as the Markdown table in docs/heads.md.

    python bench/heads.py [--shared ../shared/data] [--out runs/bench]

1. IMDb, MiniLM, the same training / test reviews (default 2,000 / 1,000): `binary` (one logit + BCE, tuned threshold)
   against `sequence_classification` (two logits + softmax). Same seed, same steps.
2. GoEmotions, MiniLM, a training subset (default 6,000 comments): `multi_label` with per-label tuned thresholds against
   the baseline that predicts the most frequent training label ("neutral") for every comment.
About 25 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from record import record

import run
from recipekit.commands.cli import guarded

REUSE = False


def train(recipe: str, out: Path, shared: Path, *overrides: str) -> tuple[dict, float]:
    if REUSE and (out / "metrics.json").exists():
        # A finished run of an earlier invocation: its scores and its own recorded wall time.
        result = json.loads((out / "metrics.json").read_text())
        return result, result["wall_time_s"]
    text = (ROOT / recipe).read_text()
    files = [line.split(":", 1) for line in text.splitlines() if line.strip().endswith(".csv") and "../shared/data/" in line]
    data = [f"data.{key.strip()}={shared / value.strip().split('../shared/data/')[1].split()[0]}" for key, value in files]
    started = time.time()
    code = guarded(run.main, [str(ROOT / recipe), f"training.output_dir={out}", "--overwrite", *data, *overrides])
    if code:
        raise SystemExit(f"{recipe} failed with exit status {code}")
    return json.loads((out / "metrics.json").read_text()), time.time() - started


def most_frequent_baseline(predictions: Path, train_counts: dict, delimiter: str = ",") -> float:
    """Micro-F1 of predicting the single most frequent training label for every row."""
    gold = pd.read_csv(predictions, dtype=str, keep_default_na=False)["label"].str.split(delimiter)
    top = max(train_counts, key=train_counts.get)
    hits = sum(top in labels for labels in gold)
    precision, recall = hits / len(gold), hits / sum(len(labels) for labels in gold)
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--only", choices=["imdb", "goemotions"], default=None)
    # Smaller than the recipes' subsets when the machine is busy; the table says which sizes ran.
    parser.add_argument("--imdb", type=int, nargs=2, default=[2000, 1000], metavar=("TRAIN", "TEST"))
    parser.add_argument("--goemotions", type=int, nargs=2, default=[6000, 2000], metavar=("TRAIN", "TEST"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override for every run")
    parser.add_argument("--reuse", action="store_true", help="read runs already finished under --out instead of training again")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse
    imdb = [f"data.max_train_samples={args.imdb[0]}", f"data.max_test_samples={args.imdb[1]}", *args.set]
    go = [f"data.max_train_samples={args.goemotions[0]}", f"data.max_test_samples={args.goemotions[1]}", *args.set]
    imdb_name = f"IMDb {args.imdb[0]}/{args.imdb[1]}"
    go_name = f"GoEmotions {args.goemotions[0]}/{args.goemotions[1]}"
    rows = []
    if args.only in (None, "imdb"):
        binary, t1 = train("recipes/binary_imdb.yaml", args.out / "imdb_binary", args.shared, *imdb)
        softmax, t2 = train(
            "recipes/binary_imdb.yaml", args.out / "imdb_softmax", args.shared,
            "model.head=sequence_classification", "model.head_options={}", *imdb,
        )
        for name, result, seconds in (("binary (tuned threshold)", binary, t1), ("sequence_classification", softmax, t2)):
            test = result["test"]
            rows.append((imdb_name, name, f"accuracy {test['accuracy']:.4f}, ROC-AUC {test['roc_auc']:.4f}, F1 {test['f1']:.4f}", seconds))
        rows.append((imdb_name, "difference", (f"accuracy {binary['test']['accuracy'] - softmax['test']['accuracy']:+.4f}, "
                     f"ROC-AUC {binary['test']['roc_auc'] - softmax['test']['roc_auc']:+.4f}"), 0.0))
        record("heads_imdb", {
            "train_rows": args.imdb[0], "test_rows": args.imdb[1],
            **{f"{name}_{key}": result["test"][key] for name, result in (("binary", binary), ("softmax", softmax))
               for key in ("accuracy", "roc_auc", "f1")},
            "binary_wall_min": t1 / 60, "softmax_wall_min": t2 / 60,
        })
    if args.only in (None, "goemotions"):
        out = args.out / "goemotions_multi_label"
        result, seconds = train("recipes/multi_label_goemotions.yaml", out, args.shared, *go)
        test = result["test"]
        baseline = most_frequent_baseline(out / "predictions.csv", result["data"]["labels"]["train"])
        rows.append((go_name, "multi_label (tuned thresholds)",
                     (f"micro-F1 {test['f1_micro']:.4f}, macro-F1 {test['f1_macro']:.4f}, subset acc {test['subset_accuracy']:.4f}, "
                     f"macro ROC-AUC {test['roc_auc_macro']:.4f}"), seconds))
        rows.append((go_name, "always the most frequent label", f"micro-F1 {baseline:.4f}", 0.0))
        record("heads_goemotions", {"micro_f1": test["f1_micro"], "macro_f1": test["f1_macro"],
                                    "always_neutral_micro_f1": baseline, "wall_min": seconds / 60})
    print("| data | head | test scores | wall time |")
    print("| --- | --- | --- | ---: |")
    for data, head, scores, seconds in rows:
        print(f"| {data} | {head} | {scores} | {f'{seconds / 60:.1f} min' if seconds else ''} |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
