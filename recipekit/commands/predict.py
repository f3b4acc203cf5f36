"""`run.py predict` and `run.py evaluate`: apply a finished run's model to new texts, read-only.

The run's own recipe.yaml says how: its text columns, max_length, label column, head, and the
preprocessing steps that rewrite text (cleaning). Steps that drop or add rows (dedupe, filters,
augmentation) are not re-applied, so every input row gets exactly one prediction, in input order.
Nothing in the run's folder is written: outputs go to --output (or stdout), never inside the run.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from datasets import Dataset

from ..core import paths
from ..core.errors import RecipeError
from ..core.files import atomic_file, write_json
from ..core.schema import Problem, not_one_of
from ..core.tables import markdown_table
from ..data.checks import column, file_place, is_empty
from ..data.files import DATA_FORMATS, read_file
from ..evaluation.metrics import strip_prefix
from ..inference.predictor import predict_rows
from ..inference.runs import TrainedRun, model_input, open_run
from ..recipe.data import encoding_problems

OUTPUT_FORMATS = [".csv", ".jsonl"]
# Rows per trainer.predict call: bounds memory on big inputs; a multiple of any usual batch size, so the
# batches (and with them every number) are those of one call over the whole input.
CHUNK_ROWS = 4096


def input_format(args, run: TrainedRun) -> tuple[str | None, str | None]:
    """The input's encoding and csv delimiter: the flags', else the run's recipe values (a file like its training files reads alike)."""
    encoding = getattr(args, "encoding", None) or run.data.encoding
    delimiter = getattr(args, "delimiter", None) or run.data.delimiter
    problems = encoding_problems(encoding, delimiter, ("--encoding", "--delimiter"))
    if problems:
        raise RecipeError(problems)
    return encoding, delimiter


def read_input(spec: str, run: TrainedRun, text_columns: list[str] | None = None, encoding: str | None = None,
               delimiter: str | None = None) -> tuple[Dataset, dict[str, str]]:
    """The input's rows, and the renaming {input column: run's text column} that --text-column asks for."""
    columns = run.data.text_columns
    if spec == "-":
        if len(columns) != 1:
            raise RecipeError(
                f"--input -: stdin gives one text per line, but this run reads {len(columns)} text columns "
                f"({', '.join(columns)}); give a CSV, JSONL or Parquet file"
            )
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        ds = Dataset.from_dict({columns[0]: [line for line in lines if line.strip()]})
    else:
        try:
            path = Path(paths.resolve(spec)).expanduser()
        except Problem as p:
            raise RecipeError(f"--input: {p}") from None
        if not path.is_file():
            raise RecipeError(f"--input: {spec!r} does not exist or is not a file")
        if path.suffix.lower() not in DATA_FORMATS:
            raise RecipeError(f"--input: {not_one_of(path.suffix or '(no extension)', list(DATA_FORMATS), 'a supported format')}")
        ds = read_file(str(path), encoding, delimiter, ("--encoding", "--delimiter"))
    rename = text_renaming(ds, run, text_columns, spec)
    readable = [rename.get(c, c) for c in ds.column_names]
    # Renamed inputs keep their own form (and names) for the output; the model's copy takes the head's form.
    ds = run.head.as_input(ds) if not rename and all(c in readable for c in columns) else ds
    missing = [c for c in columns if c not in readable]
    if missing:
        raise RecipeError(
            f"--input {spec}: no text column {', '.join(map(repr, missing))} (the run {run.folder} reads "
            f"{', '.join(columns)}); columns: {', '.join(ds.column_names) or 'none'}; name yours with --text-column NAME"
        )
    return ds, rename


def text_renaming(ds: Dataset, run: TrainedRun, text_columns: list[str] | None, spec: str) -> dict[str, str]:
    """--text-column NAME (once per text column of the run, in its order): the input's NAME is read as the run's column."""
    if not text_columns:
        return {}
    wanted = run.data.text_columns
    if len(text_columns) != len(wanted):
        raise RecipeError(f"--text-column: the run {run.folder} reads {len(wanted)} text column(s) ({', '.join(wanted)}); "
                          f"got {len(text_columns)} ({', '.join(text_columns)})")
    absent = [c for c in text_columns if c not in ds.column_names]
    if absent:
        raise RecipeError(f"--text-column: {absent[0]!r} is not a column of {spec}; columns: {', '.join(ds.column_names) or 'none'}")
    return {given: own for given, own in zip(text_columns, wanted) if given != own}


def as_run_columns(ds: Dataset, rename: dict[str, str]) -> Dataset:
    """The input with its text under the run's names; a column already holding such a name steps aside (the model
    reads the one --text-column names)."""
    clash = [c for c in rename.values() if c in ds.column_names and c not in rename]
    return ds.remove_columns(clash).rename_columns(rename)


def check_output(output: str | None, spec: str, run: TrainedRun, option: str, formats: list[str] | None) -> None:
    """Refuse an output path inside the run's folder, one that is the input itself, or an unsupported format."""
    if output is None:
        return
    path = Path(output).expanduser().resolve()
    if formats and path.suffix.lower() not in formats:
        raise RecipeError(f"--{option}: {not_one_of(path.suffix or '(no extension)', formats, 'a supported format')}")
    if path.is_relative_to(run.folder.resolve()):
        raise RecipeError(
            f"--{option}: {output!r} is inside the run folder {run.folder}; a trained run is never written to, choose a path outside it"
        )
    if spec != "-" and path == Path(spec).expanduser().resolve():
        raise RecipeError(f"--{option}: {output!r} is the input file; choose another path")


def predictions(run: TrainedRun, ds: Dataset, batch_size: int | None, with_gold: bool, rename: dict | None = None):
    """Yield (rows of the input, the head's Prediction) chunk by chunk: the model reads the cleaned text (from the
    columns `rename` names, --text-column); the rows yielded are the input's own, so the output shows what the user gave."""
    source = as_run_columns(ds, rename) if rename else ds
    view = model_input(run, source, run.data.text_columns + ([run.data.label_column] if with_gold else []))
    if with_gold:
        try:
            view = run.head.encode_split(view)
        except RecipeError as e:
            raise RecipeError([f"--input: {p}" for p in e.problems]) from None
    chunk = len(ds) if with_gold else CHUNK_ROWS  # scores need every row at once
    for rows, prediction in predict_rows(run, view, batch_size, chunk, with_gold):
        yield ds.select(rows), prediction


@contextmanager
def open_output(output: str | None, to_stdout: bool):
    """--output written whole or not at all (no half-written file on failure); without --output, stdout for
    `predict` and nothing for `evaluate`."""
    if output is None:
        yield sys.stdout if to_stdout else None
        return
    # newline="": the csv writer ends its own lines.
    with atomic_file(Path(output).expanduser(), newline="") as f:
        yield f


def write_rows(f, frame: pd.DataFrame, fmt: str, first: bool) -> None:
    if fmt == ".jsonl":
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        f.write(text if text.endswith("\n") else text + "\n")
    else:
        frame.to_csv(f, header=first, index=False)


def run_predictions(args, run: TrainedRun, with_gold: bool):
    """Write the input's columns plus the head's prediction columns; with_gold: return the Prediction of all rows."""
    for option in ("output", "metrics", "plots"):
        check_output(getattr(args, option, None), args.input, run, option, formats=OUTPUT_FORMATS if option == "output" else None)
    encoding, delimiter = input_format(args, run)
    ds, rename = read_input(args.input, run, getattr(args, "text_column", None), encoding, delimiter)
    if with_gold:
        ds = without_empty_gold(ds, run, args.input, encoding, delimiter)
    if not len(ds):
        raise RecipeError(f"--input {args.input}: no rows to {'evaluate' if with_gold else 'predict'}")
    # Lists (tags) and long generated text read best as JSON lines: the head's own format unless --output says otherwise.
    fmt = Path(args.output).suffix.lower() if args.output else Path(run.head.predictions_file).suffix
    last = None
    with open_output(args.output, to_stdout=not with_gold) as f:
        for i, (rows, prediction) in enumerate(predictions(run, ds, args.batch_size, with_gold, rename)):
            if f is not None:
                frame = pd.DataFrame(rows.to_dict())
                for name, values in prediction.columns.items():
                    frame[name] = values
                if fmt == ".csv":  # word lists (tags, or texts split into words) read best as one spaced string
                    for name in frame.columns:
                        frame[name] = [" ".join(v) if isinstance(v, list) else v for v in frame[name]]
                write_rows(f, frame, fmt, first=i == 0)
            last = prediction
    if args.output:
        print(f"wrote {len(ds)} predictions to {args.output}", file=sys.stderr)
    return last


def without_empty_gold(ds: Dataset, run: TrainedRun, spec: str, encoding: str | None = None, delimiter: str | None = None) -> Dataset:
    """Refuse a missing gold column; rows with no gold label are dropped and counted, as training drops them
    ("missing label"); labels the run never saw are refused by the head."""
    label = run.data.label_column
    if label not in ds.column_names:
        raise RecipeError(
            f"--input {spec}: no gold label column {label!r} (the run's data.label_column); columns: {', '.join(ds.column_names)}"
        )
    empty = [i for i, v in enumerate(column(ds, label)) if v is None or (run.head.text_labels and is_empty(v))]
    if not empty:
        return ds
    more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
    print(f"evaluate: {len(empty)} of {len(ds)} rows have an empty gold label in column {label!r} (first at "
          f"{file_place(spec, empty[0], encoding, delimiter)}{more}); dropped as missing label, as training drops them", file=sys.stderr)
    return ds.select(sorted(set(range(len(ds))) - set(empty)))


def load_run(folder: str) -> TrainedRun:
    return open_run(folder)


def predict_command(args) -> int:
    run_predictions(args, load_run(args.run), with_gold=False)
    return 0


def evaluate_command(args) -> int:
    """The run's scores on a labelled file: the recipe's metrics (as metrics.json has them for the test split)
    and the head's full evaluation, with the decision rule the run chose."""
    run = load_run(args.run)
    prediction = run_predictions(args, run, with_gold=True)
    output = prediction.output
    if output is None or output.label_ids is None:
        raise RecipeError(f"evaluate: head {run.head.name!r} scores nothing without gold labels; its scores are in {run.folder / 'metrics.json'}")
    scores = run.head.scores(strip_prefix(output.metrics, "test_"))
    details = run.head.evaluation(output.label_ids, output.predictions) or {}
    details = {"metrics": {k: v for k, v in scores.items() if not k.endswith(("runtime", "per_second", "preparation_time"))}, **details}
    print("\n".join(evaluation_text(details, run, args.input, len(output.label_ids))))
    if args.metrics:
        write_json(Path(args.metrics), {"run": str(run.folder), "input": args.input, "rows": len(output.label_ids),
                                        "decision_rule": run.head.decision_rule(), **details})
    if args.plots:
        for _, path in run.head.plots(output.label_ids, output.predictions, Path(args.plots), Path(args.input).name):
            print(f"plot: {path}", file=sys.stderr)
    return 0


def evaluation_text(details: dict, run: TrainedRun, spec: str, rows: int) -> list[str]:
    lines = [f"evaluation of {run.folder} on {spec} ({rows} rows)"]
    if run.head.decision_rule():
        lines.append(f"decision rule: {run.head.decision_rule()}")
    scores = {**details["metrics"], **details.get("scores", {})}
    lines += ["", *markdown_table(["metric", "value"], [[k, v] for k, v in scores.items()])]
    if details.get("per_class"):
        lines += ["", *markdown_table(list(details["per_class"][0]), [list(r.values()) for r in details["per_class"]])]
    if details.get("confusion_matrix"):
        lines += ["", "confusion matrix (rows: gold, columns: predicted)", ""]
        rows_ = [[name, *row] for name, row in zip(run.labels, details["confusion_matrix"])]
        lines += markdown_table(["gold \\ predicted", *run.labels], rows_)
    return lines
