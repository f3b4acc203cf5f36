"""`python run.py cv RECIPE --folds K`: k-fold cross-validation of a recipe, and label-error detection.

The folds are drawn from the training rows as a normal run of the recipe loads them (checks, carving of a
test split, preprocessing, max_train_samples): the rows that survive are split into K seeded folds
(stratified by label for classification heads; never splitting a group with --group-column). Each fold's
training and held-out rows are written, as read from the source, to `OUTPUT_DIR/data/fold-K/`, and the
fold is trained by run.py's own `fine_tune` into `OUTPUT_DIR/fold-K` from the recipe with its data section
pointed at those files: preprocessing is the recipe's own, and each fold folder is a normal finished run.

The recipe's validation set (validation_file, validation_split_name, validation_split) is not used: each
fold validates on its held-out part, and a validation_split's rows go back into the training rows.
Finished folds are skipped on a rerun, as a sweep's trials are.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import RecipeError
from ..core.files import write_atomic, write_json, write_predictions
from ..core.tables import markdown_table
from ..data.checks import column
from ..data.loading import ROW, load_sources, load_splits
from ..heads import HEADS, head_for
from ..inference.runs import open_run
from ..modeling.loading import load_tokenizer
from ..outputs.folder import FINISHED_MARKER
from ..recipe.build import build_recipe, load_recipe
from .predict import predictions
from .sweep import finished, run_trial

PLAN_FILE = "folds.csv"  # one line per training row: its source row and its fold (and group)
NOT_SCORES = ("runtime", "samples_per_second", "steps_per_second", "preparation_time", "epoch")


def cv_command(args, fine_tune) -> int:
    base = load_recipe(args.recipe, args.overrides)
    if base.data.streaming:
        raise RecipeError("cv: folds are carved from every training row, which a stream never holds; run cv with data.streaming: false")
    check_request(base, args)
    root = Path(base.training.output_dir)
    if (root / "recipe.yaml").exists():
        raise RecipeError(f"cv: {root} holds a run; fold-K folders go beside nothing else: choose another "
                          f"training.output_dir (e.g. training.output_dir={root}-cv)")
    seed = base.training.seed
    head = head_for(base)
    # The recipe's own validation set plays no part: each fold validates on its held-out part.
    data_args = dataclasses.replace(base.data, validation_file=None, validation_split_name=None, validation_split=0.0)
    loaded = load_splits(data_args, base.preprocess, seed, load_tokenizer(base.model, base.tokenizer), head=head)
    raw, _ = load_sources(data_args, seed, head.needs_labels)
    train = loaded.splits["train"]
    rows = np.asarray(column(train, ROW))
    groups = group_values(raw["train"], args.group_column, rows)
    labels = np.asarray(column(train, "labels")) if head.stratify else None
    fold_of = assign_folds(len(rows), args.folds, seed, labels, groups, loaded.labels)
    plan = pd.DataFrame({"row": rows, "fold": fold_of + 1, **({"group": groups} if groups is not None else {})})
    check_plan(root, plan)
    test_rows = None
    if "test" in loaded.splits:
        test_source = raw["test"] if "test" in raw else raw["train"]  # a test_split is carved from the training file
        test_rows = test_source.select(column(loaded.splits["test"], ROW))
    print("\n".join(plan_table(plan, labels, loaded.labels, args.folds)))
    if args.check:
        return 0

    is_main = base.training.process_index == 0
    with base.training.main_process_first(desc="write the folds"):
        if is_main:
            write_folds(root, raw["train"], plan, test_rows)
    # After the files: a recipe is refused when its data files do not exist.
    recipes = fold_recipes(base, root, args.folds, test_rows is not None, args.recipe)
    done = [already_finished(r) for r in recipes]
    for k, recipe in enumerate(recipes, 1):
        if done[k - 1]:
            print(f"cv: fold-{k} already finished, skipped")
            continue
        status = run_trial(fine_tune, recipe, {"fold": k}, is_main, command="cv", record=False)
        if status != 0:
            return status
    if not is_main:
        return 0
    oof = out_of_fold(root, raw["train"], plan, args.folds)
    write_predictions(root / "oof_predictions.csv", oof)
    summary = summarise(root, args.folds, oof)
    write_json(root / "cv.json", summary)
    lines = summary_lines(summary, args.recipe)
    write_atomic(root / "cv.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    written = [root / "cv.md", root / "cv.json", root / "oof_predictions.csv"]
    if args.label_issues:
        issues = label_issues(oof, open_run(str(root / "fold-1")).head)
        write_predictions(root / "label_issues.csv", issues)
        written.append(root / "label_issues.csv")
        print(f"cv: {len(issues)} of {len(oof)} training rows flagged as likely label errors")
    print("cv: " + ", ".join(map(str, written)))
    return 0


def check_request(base, args) -> None:
    """Everything cv cannot do with this recipe, at once, before anything is read or written."""
    problems = []
    cv_heads = [name for name, head in HEADS.items() if head.supports_cv]
    issue_heads = [name for name, head in HEADS.items() if head.one_class_per_row]
    if base.model.head not in cv_heads:
        problems.append(f"cv: head {base.model.head!r} is not supported; cross-validation runs heads {', '.join(cv_heads)}")
    if args.label_issues and base.model.head not in issue_heads:
        problems.append(f"--label-issues: ranks labels of one class per row (heads {', '.join(issue_heads)}), not head {base.model.head!r}")
    if args.label_issues:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            problems.append("--label-issues needs cleanlab: pip install 'recipekit[cv]'")
    if args.folds < 2:
        problems.append(f"--folds: {args.folds}; cross-validation needs 2 or more folds")
    if base.sweep:
        problems.append(f"cv: {args.recipe} is a sweep; cross-validate one recipe (a trial's recipe.yaml) at a time")
    if base.sanity.active:
        problems.append("sanity: cv trains full runs; run sanity checks with python run.py RECIPE")
    if problems:
        raise RecipeError(problems)


def group_values(raw_train, group_column: str | None, rows: np.ndarray) -> np.ndarray | None:
    if group_column is None:
        return None
    if group_column not in raw_train.column_names:
        raise RecipeError(f"--group-column: {group_column!r} is not a column of the training data; columns: {', '.join(raw_train.column_names)}")
    values = raw_train.with_format("arrow")[group_column].to_pylist()
    return np.asarray([str(values[r]) for r in rows])


def assign_folds(n: int, k: int, seed: int, labels, groups, names: list[str]) -> np.ndarray:
    """Fold index (0-based) of each row: seeded, stratified by label when `labels` is given, groups kept whole."""
    if k > n:
        raise RecipeError(f"--folds: {k} folds of {n} training rows; use at most {n}")
    if labels is not None:
        counts = np.bincount(labels, minlength=len(names))
        rare = [f"{names[i]!r} ({c})" for i, c in enumerate(counts) if 0 < c < k]
        if rare:
            # A class in fewer rows than folds is missing from some fold's held-out part, and a fold that learns
            # without it cannot score it; each fold must see every class.
            raise RecipeError(f"--folds: {k} folds, but classes {', '.join(rare)} have fewer training rows than folds; "
                              "lower --folds or drop rare classes with preprocess: filter_labels")
    if groups is not None and len(set(groups)) < k:
        raise RecipeError(f"--group-column: {len(set(groups))} groups cannot fill {k} folds; lower --folds")
    # Imported here: scikit-learn costs ~0.5 s of every command's start (run.py imports this module).
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if groups is not None:
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if labels is not None else GroupKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if labels is not None else KFold(k, shuffle=True, random_state=seed)
    fold_of = np.full(n, -1)
    target = labels if labels is not None else np.zeros(n)
    for i, (_, held) in enumerate(splitter.split(np.zeros(n), target, groups)):
        fold_of[held] = i
    return fold_of


def check_plan(root: Path, plan: pd.DataFrame) -> None:
    """A rerun continues the same folds; different folds (new data, --folds, seed or group column) would mix
    runs of two splits, so they are refused."""
    path = root / PLAN_FILE
    if not path.exists():
        return
    old = pd.read_csv(path, keep_default_na=False, dtype={"group": str})
    same = list(old.columns) == list(plan.columns) and len(old) == len(plan) and all(
        (old[c].astype(str).to_numpy() == plan[c].astype(str).to_numpy()).all() for c in plan.columns
    )
    if not same:
        raise RecipeError(f"cv: {root} holds folds of a different split (the data, --folds, training.seed or --group-column "
                          "changed); choose another training.output_dir or remove that folder")


def fold_recipes(base, root: Path, k: int, has_test: bool, source: str) -> list:
    """The recipe of each fold: its data section reads the fold's files, everything else is the recipe's."""
    raw = base.to_dict()
    raw.pop("sweep", None)
    recipes = []
    for i in range(1, k + 1):
        fold = json.loads(json.dumps(raw))
        folder = root / "data" / f"fold-{i}"
        fold["data"].update(
            dataset=None, dataset_config=None, dataset_revision=None, sources=None, train_split_name="train",
            validation_split_name=None, test_split_name=None, validation_split=0.0, test_split=0.0,
            train_file=str(folder / "train.parquet"), validation_file=str(folder / "validation.parquet"),
            test_file=str(root / "data" / "test.parquet") if has_test else None,
            # The rows were chosen once, before folding: a fold subsamples nothing again.
            max_train_samples=None, max_eval_samples=None, max_test_samples=None,
        )
        fold["training"]["output_dir"] = str(root / f"fold-{i}")
        recipes.append(build_recipe(fold, source=source))
    return recipes


def already_finished(recipe) -> bool:
    try:
        return finished(recipe)
    except RecipeError:
        raise RecipeError(f"cv: {recipe.training.output_dir} holds a finished run of a different recipe (the recipe changed since); "
                          "choose another training.output_dir or remove that folder") from None


def plan_table(plan: pd.DataFrame, labels, names: list[str], k: int) -> list[str]:
    header = ["fold", "train rows", "held-out rows", *(["groups"] if "group" in plan else []), *[f"held-out {n}" for n in names if labels is not None]]
    table = []
    for i in range(1, k + 1):
        held = (plan["fold"] == i).to_numpy()
        row = [f"fold-{i}", int((~held).sum()), int(held.sum())]
        if "group" in plan:
            row.append(plan.loc[held, "group"].nunique())
        if labels is not None:
            row += list(np.bincount(labels[held], minlength=len(names)))
        table.append(row)
    return [f"cv: {k} folds of {len(plan)} training rows", "", *markdown_table(header, table), ""]


def write_folds(root: Path, raw_train, plan: pd.DataFrame, test_rows) -> None:
    """Each fold's rows as the source has them (the fold's run preprocesses them as the recipe says)."""
    write_atomic(root / PLAN_FILE, plan.to_csv(index=False))
    rows = plan["row"].to_numpy()
    for i in sorted(plan["fold"].unique()):
        folder = root / "data" / f"fold-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        held = (plan["fold"] == i).to_numpy()
        raw_train.select(rows[~held]).to_parquet(str(folder / "train.parquet"))
        raw_train.select(rows[held]).to_parquet(str(folder / "validation.parquet"))
    if test_rows is not None:
        test_rows.to_parquet(str(root / "data" / "test.parquet"))


def out_of_fold(root: Path, raw_train, plan: pd.DataFrame, k: int) -> pd.DataFrame:
    """Every training row predicted by the fold model that did not train on it, through `run.py predict`'s path."""
    parts = []
    for i in range(1, k + 1):
        run = open_run(str(root / f"fold-{i}"))
        held = plan[plan["fold"] == i]
        ds = run.head.as_input(raw_train.select(held["row"].to_numpy()))
        columns: dict[str, list] = {}
        for _, prediction in predictions(run, ds, None, with_gold=False):
            for name, values in prediction.columns.items():
                columns.setdefault(name, []).extend(values)
        frame = pd.DataFrame({"row": held["row"].to_numpy(), "fold": i})
        for name in run.data.text_columns:
            frame[name] = column(ds, name)
        frame[run.data.label_column] = column(ds, run.data.label_column)
        for name, values in columns.items():
            frame[name] = values
        parts.append(frame)
    return pd.concat(parts).sort_values("row").reset_index(drop=True)


def scores_of(record: dict, split: str) -> dict:
    values = record.get(split) or {}
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith(NOT_SCORES)}


def spread(per_fold: list[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1) of each metric every fold has."""
    names = [n for n in per_fold[0] if all(n in f for f in per_fold)]
    out = {}
    for name in names:
        values = np.asarray([f[name] for f in per_fold], dtype=float)
        out[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))}
    return out


def summarise(root: Path, k: int, oof: pd.DataFrame) -> dict:
    runs = [open_run(str(root / f"fold-{i}")) for i in range(1, k + 1)]
    records = [json.loads((root / f"fold-{i}" / FINISHED_MARKER).read_text()) for i in range(1, k + 1)]
    first = runs[0]
    per_fold = [{
        "fold": i, "output_dir": str(root / f"fold-{i}"),
        "train_rows": record["data"]["sizes"]["train"], "validation_rows": record["data"]["sizes"]["validation"],
        "validation": scores_of(record, "validation"), "test": scores_of(record, "test"),
    } for i, record in enumerate(records, 1)]
    summary = {
        "folds": k, "rows": len(oof), "head": first.head.name, "labels": first.labels, "per_fold": per_fold,
        "validation": spread([f["validation"] for f in per_fold]),
        "out_of_fold": pooled_scores(first, oof),
    }
    if all(f["test"] for f in per_fold):
        summary["test"] = spread([f["test"] for f in per_fold])
        summary["test_average"] = average_test(root, runs)
    return summary


def pooled_scores(first, oof: pd.DataFrame) -> dict:
    """The recipe's metrics over every out-of-fold prediction at once, each row decided by its own fold's model."""
    return first.head.file_scores(first.metric_names, oof)


def average_test(root: Path, runs: list) -> dict:
    """The test set scored by the average of the fold models, as the head averages them (mean probabilities or
    values, decided by the folds' averaged rule). Writes test_predictions.csv."""
    frames = [pd.read_csv(run.folder / run.head.predictions_file, keep_default_na=False) for run in runs]
    text = runs[0].data.text_columns
    if any(len(f) != len(frames[0]) or not f[text].equals(frames[0][text]) for f in frames):
        raise RecipeError("cv: the folds predicted different test rows (a preprocessing step depends on the training rows); "
                          "compare the folds' predictions.csv")
    out = frames[0][[*text, runs[0].data.label_column]].copy()
    first = runs[0]
    columns, scores = first.head.fold_average([run.head for run in runs], frames, first.metric_names)
    for name, values in columns.items():
        out[name] = values
    write_predictions(root / "test_predictions.csv", out)
    return scores


def summary_lines(summary: dict, source: str) -> list[str]:
    k = summary["folds"]
    lines = [f"# Cross-validation: {k} folds", "",
             f"Recipe `{source}`, head {summary['head']}: {summary['rows']} training rows, each held out by exactly one fold.",
             "Mean and sample standard deviation (ddof=1) over the folds.", ""]
    folds = [f"fold-{i}" for i in range(1, k + 1)]
    for split, title in (("validation", "Held-out part of each fold"), ("test", "Test set, each fold's model")):
        if split not in summary:
            continue
        names = list(summary[split])
        rows = [[name, *[f[split].get(name) for f in summary["per_fold"]], summary[split][name]["mean"], summary[split][name]["std"]]
                for name in names]
        lines += [f"## {title}", "", *markdown_table(["metric", *folds, "mean", "std"], rows), ""]
    lines += ["## Out-of-fold predictions, all rows at once", "",
              *markdown_table(["metric", "value"], [[n, v] for n, v in summary["out_of_fold"].items()]), ""]
    if "test_average" in summary:
        lines += ["## Test set, average of the fold models (mean probabilities)", "",
                  *markdown_table(["metric", "value"], [[n, v] for n, v in summary["test_average"].items()]), ""]
    return lines


def label_issues(oof: pd.DataFrame, head) -> pd.DataFrame:
    """Training rows whose given label is likely wrong, most likely first: cleanlab's confident learning on the
    out-of-fold probabilities (each row scored by a model that never saw it)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = head.labels
    index = {name: i for i, name in enumerate(labels)}
    gold = head.data.label_column
    given = np.asarray([index[str(v)] for v in oof[gold]])
    probs = head.file_probabilities(oof)
    ranked = find_label_issues(given, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(given, probs, method="self_confidence")
    text = [c for c in oof.columns if c not in ("row", "fold", gold, "predicted") and not c.startswith("prob_")]
    out = oof.iloc[ranked][["row", "fold", *text]].copy()
    out["given_label"] = [labels[i] for i in given[ranked]]
    out["suggested_label"] = [labels[i] for i in probs[ranked].argmax(axis=1)]
    out["label_quality"] = quality[ranked]  # P(given label) from the fold model: low means likely wrong
    return out.reset_index(drop=True)
