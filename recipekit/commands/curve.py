"""`python run.py curve RECIPE --sizes 8,16,32,64,all --seeds 5`: a learning curve, and whether more labels would help.

The training rows are loaded as a normal run of the recipe loads them (checks, preprocessing, carving); for
each size (rows per class) and seed, a seeded class-balanced subset is drawn (`all`: every row) and written,
as read from the source, to `OUTPUT_DIR/data/size-N-seed-S.parquet`; run.py's own `fine_tune` trains it into
`OUTPUT_DIR/size-N/seed-S` (training.seed + S), so each point is a normal finished run. Every run is scored on
the same rows (the recipe's test split, else its validation split), and a TF-IDF + logistic regression
baseline (scikit-learn) is fitted on each same subset beside it. Finished runs are skipped on a rerun.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import RecipeError
from ..core.files import write_atomic, write_json
from ..core.tables import markdown_table
from ..data.checks import column
from ..data.loading import ROW, load_sources, load_splits
from ..heads import HEADS, head_for
from ..modeling.loading import load_tokenizer
from ..recipe.build import build_recipe, load_recipe
from .cv import already_finished
from .sweep import run_trial

METRIC = "accuracy"  # the curve's score, for the recipe and the baseline alike


def parse_sizes(text: str) -> list[int | str]:
    """`8,16,32,all` -> [8, 16, 32, 'all']: rows per class, strictly increasing, `all` only last."""
    sizes: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            sizes.append("all")
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise RecipeError(f"--sizes: {part!r} is not a positive number of rows per class or 'all'")
    numbers = [s for s in sizes if s != "all"]
    if "all" in sizes[:-1] or numbers != sorted(set(numbers)):
        raise RecipeError(f"--sizes: {text!r} must be increasing, each size once, with 'all' only last")
    return sizes


def curve_command(args, fine_tune) -> int:
    base = load_recipe(args.recipe, args.overrides)
    if base.data.streaming:
        raise RecipeError("curve: subsets are drawn from every training row, which a stream never holds; run curve with data.streaming: false")
    sizes = parse_sizes(args.sizes)
    few_shot = [name for name, head in HEADS.items() if head.one_class_per_row]
    if base.model.head not in few_shot:
        raise RecipeError(f"curve: head {base.model.head!r} has no classes per row to draw balanced subsets of; "
                          f"a learning curve runs heads {', '.join(few_shot)}")
    if args.seeds < 1:
        raise RecipeError(f"--seeds: {args.seeds} must be at least 1")
    if base.sweep or base.sanity.active:
        raise RecipeError("curve: trains full runs of one recipe; leave out sweep: and sanity:")
    root = Path(base.training.output_dir)
    if (root / "recipe.yaml").exists():
        raise RecipeError(f"curve: {root} holds a run; choose another training.output_dir (e.g. training.output_dir={root}-curve)")
    head = head_for(base)
    loaded = load_splits(base.data, base.preprocess, base.training.seed, load_tokenizer(base.model, base.tokenizer), head=head)
    raw, _ = load_sources(base.data, base.training.seed, head.needs_labels)
    scored = "test" if "test" in loaded.splits else "validation" if "validation" in loaded.splits else None
    if scored is None:
        raise RecipeError("curve: the recipe has no test or validation split to score every run on; set data.test_file or data.validation_file")
    train = loaded.splits["train"]
    labels = np.asarray(column(train, "labels"))
    counts = np.bincount(labels, minlength=len(loaded.labels))
    largest = max((s for s in sizes if s != "all"), default=0)
    short = [f"{name!r} has {n}" for name, n in zip(loaded.labels, counts) if n < largest]
    if short:
        raise RecipeError(f"--sizes: {largest} rows per class, but class {', '.join(short)} training rows; use sizes up to {counts.min()}")
    rows = np.asarray(column(train, ROW))
    plan = {(size, s): subset(labels, size, base.training.seed + s) for size in sizes for s in range(args.seeds)}
    print(f"curve: {len(plan)} runs ({len(sizes)} sizes x {args.seeds} seeds), scored on {loaded.splits[scored].num_rows} {scored} rows")
    if args.check:
        return 0

    eval_rows = source_of(raw, scored).select(column(loaded.splits[scored], ROW))
    (root / "data").mkdir(parents=True, exist_ok=True)
    eval_rows.to_parquet(str(root / "data" / f"{scored}.parquet"))
    if scored == "test" and "validation" in loaded.splits:  # the recipe's validation set stays its validation set
        source_of(raw, "validation").select(column(loaded.splits["validation"], ROW)).to_parquet(str(root / "data" / "validation.parquet"))
    results = []
    for (size, s), picked in plan.items():
        data_file = root / "data" / f"size-{size}-seed-{s}.parquet"
        subset_rows = raw["train"].select(rows[picked])
        subset_rows.to_parquet(str(data_file))
        recipe = point_recipe(base, root, size, s, data_file, scored, args.recipe)
        if already_finished(recipe):
            print(f"curve: size-{size}/seed-{s} already finished, skipped")
        elif run_trial(fine_tune, recipe, {"size": size, "seed": s}, True, command="curve", record=False) != 0:
            return 1
        metrics = json.loads((Path(recipe.training.output_dir) / "metrics.json").read_text())
        results.append({"size": size, "seed": s, "rows": len(picked), "per_class": class_counts(labels[picked], loaded.labels),
                        "score": metrics[scored][METRIC], "train_runtime": metrics["train"].get("train_runtime"),
                        "baseline": tfidf_score(subset_rows, eval_rows, base.data)})
    summary = summarise(results, sizes, base.model.head)
    write_json(root / "curve.json", {"metric": METRIC, "split": scored, "sizes": sizes, "seeds": args.seeds, **summary, "runs": results})
    lines = summary_lines(summary, args.recipe, scored)
    write_atomic(root / "curve.md", "\n".join(lines) + "\n")
    plot(summary, root / "curve.png", base.model.head)
    print("\n".join(lines))
    print(f"curve: {root / 'curve.md'}, {root / 'curve.json'}, {root / 'curve.png'}")
    return 0


def subset(labels: np.ndarray, size: int | str, seed: int) -> np.ndarray:
    """Positions of `size` rows of each class, drawn with `seed` (all rows for 'all'), in the training order."""
    if size == "all":
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def class_counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    return {name: int(n) for name, n in zip(names, np.bincount(labels, minlength=len(names)))}


def source_of(raw, split: str):
    # A split carved from the training file lives in raw's train.
    return raw[split] if split in raw else raw["train"]


def point_recipe(base, root: Path, size, seed: int, data_file: Path, scored: str, source: str):
    raw = json.loads(json.dumps(base.to_dict()))
    raw.pop("sweep", None)
    scored_file = str(root / "data" / f"{scored}.parquet")
    validation = root / "data" / "validation.parquet"
    raw["data"].update(
        dataset=None, dataset_config=None, dataset_revision=None, sources=None, train_split_name="train",
        validation_split_name=None, test_split_name=None, validation_split=0.0, test_split=0.0,
        train_file=str(data_file), test_file=scored_file, validation_file=str(validation) if validation.exists() else None,
        max_train_samples=None, max_eval_samples=None, max_test_samples=None,
    )
    raw["training"]["output_dir"] = str(root / f"size-{size}" / f"seed-{seed}")
    raw["training"]["seed"] = base.training.seed + seed
    return build_recipe(raw, source=source)


def tfidf_score(train_rows, eval_rows, data) -> float:
    """Accuracy of TF-IDF (word 1-2 grams) + logistic regression fitted on the same subset."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def texts(ds):
        # Each column read once: ds[column] materialises the whole column, so reading it per row is quadratic.
        return [" ".join(str(v) for v in values) for values in zip(*(ds[c] for c in data.text_columns))]

    y = [str(v) for v in train_rows[data.label_column]]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(texts(train_rows)), y)
    predicted = model.predict(vectorizer.transform(texts(eval_rows)))
    return float(np.mean(predicted == np.asarray([str(v) for v in eval_rows[data.label_column]])))


def summarise(results: list[dict], sizes, head: str) -> dict:
    points = []
    for size in sizes:
        runs = [r for r in results if r["size"] == size]
        scores, baseline = np.array([r["score"] for r in runs]), np.array([r["baseline"] for r in runs])
        times = [r["train_runtime"] for r in runs if r["train_runtime"] is not None]
        points.append({"size": size, "mean": float(scores.mean()), "std": float(scores.std()), "min": float(scores.min()),
                       "max": float(scores.max()), "baseline_mean": float(baseline.mean()), "baseline_std": float(baseline.std()),
                       "train_runtime_mean": float(np.mean(times)) if times else None})
    return {"head": head, "points": points, "verdict": verdict(points)}


def verdict(points: list[dict]) -> dict:
    """Still rising: the last step's gain in mean exceeds the seeds' spread (std) at both of its sizes."""
    if len(points) < 2:
        return {"rising": None, "sentence": "one size only: no curve to read a trend from; give two or more --sizes"}
    a, b = points[-2], points[-1]
    gain, spread = b["mean"] - a["mean"], max(a["std"], b["std"])
    rising = gain > spread
    def name(size):
        return "all rows" if size == "all" else f"{size} per class"

    how = (f"{name(b['size'])} scores {b['mean']:.4f} ± {b['std']:.4f} against {a['mean']:.4f} ± {a['std']:.4f} at {name(a['size'])} "
           f"(gain {gain:+.4f}, seed spread {spread:.4f})")
    if rising:
        sentence = f"The curve is still rising at the largest size: {how}; more labels would likely help."
    else:
        sentence = f"The curve has flattened at the largest size: {how}, a gain within the seeds' spread; more labels of the same kind are unlikely to help much."
    return {"rising": bool(rising), "gain": gain, "spread": spread, "sentence": sentence}


def summary_lines(summary: dict, recipe_path: str, split: str) -> list[str]:
    rows = [[str(p["size"]), f"{p['mean']:.4f} ± {p['std']:.4f}", f"{p['min']:.4f} - {p['max']:.4f}",
             f"{p['baseline_mean']:.4f} ± {p['baseline_std']:.4f}",
             "" if p["train_runtime_mean"] is None else f"{p['train_runtime_mean']:.1f}"] for p in summary["points"]]
    header = ["per class", f"{summary['head']} {METRIC} (mean ± std)", "min - max", f"TF-IDF {METRIC} (mean ± std)", "train s (mean)"]
    return [f"# Learning curve: {recipe_path}", "", f"{METRIC} on the {split} split, mean over seeds.", "",
            *markdown_table(header, rows), "", summary["verdict"]["sentence"]]


def plot(summary: dict, path: Path, head: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = summary["points"]
    x = np.arange(len(points))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, [p["mean"] for p in points], yerr=[p["std"] for p in points], marker="o", capsize=3, label=head)
    ax.errorbar(x, [p["baseline_mean"] for p in points], yerr=[p["baseline_std"] for p in points], marker="s", capsize=3,
                label="TF-IDF + logistic regression")
    ax.set_xticks(x, [str(p["size"]) for p in points])
    ax.set_xlabel("training rows per class")
    ax.set_ylabel(METRIC)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
