"""`run.py predict` and `run.py evaluate`: apply a finished run's model to new texts, read-only.

The run's own recipe.yaml says how: its text columns, max_length, label column, head, and the
preprocessing steps that rewrite text (cleaning). Steps that drop or add rows (dedupe, filters,
augmentation) are not re-applied, so every input row gets exactly one prediction, in input order.
Nothing in the run's folder is written: outputs go to --output (or stdout), never inside the run.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from .data import read_file
from .errors import RecipeError
from .heads import HEADS
from .outputs import FINISHED_MARKER, read_record, write_json
from .preprocess import Context
from .recipe import DATA_FORMATS, DataArgs, ModelArgs, build_steps, read_yaml
from .report import markdown_table
from .schema import build_kwargs, not_one_of
from .train import load_tokenizer

OUTPUT_FORMATS = [".csv", ".jsonl"]
# Inference needs no gradients or optimizer state: a batch several times the training one fits.
DEFAULT_BATCH_SIZE = 64


@dataclass
class TrainedRun:
    folder: Path
    data: DataArgs
    steps: list
    head: object
    model_args: ModelArgs
    labels: list[str]
    batch_size: int
    training: dict  # the run's `training:` section as written (generation settings for generating heads)


def load_run(folder: str) -> TrainedRun:
    """Read a finished run's recipe.yaml and labels; refuse a folder that holds no finished run."""
    out = Path(folder)
    if not out.is_dir():
        raise RecipeError(f"{folder}: not a folder; give the output_dir of a finished run")
    if not (out / FINISHED_MARKER).exists() or not (out / "recipe.yaml").exists():
        raise RecipeError(f"{folder}: holds no finished run (no {FINISHED_MARKER} or recipe.yaml); train it first")
    raw = read_yaml(str(out / "recipe.yaml"))
    errors: list[str] = []
    data = DataArgs(**build_kwargs(DataArgs, raw.get("data"), "data", errors))
    steps = build_steps(raw.get("preprocess"), errors)
    # The trained weights and tokenizer are in the run's folder; the rest of the model section still applies.
    model_args = ModelArgs(**build_kwargs(ModelArgs, {**(raw.get("model") or {}), "name_or_path": str(out)}, "model", errors))
    if errors:
        raise RecipeError([f"{out / 'recipe.yaml'}: {e}" for e in errors])
    record = read_record(out)  # a damaged metrics.json is a one-line error
    batch_size = (raw.get("training") or {}).get("per_device_eval_batch_size") or DEFAULT_BATCH_SIZE
    head = HEADS[model_args.head](model_args.head_options, model_args.head_config)
    if head.predictions_file is None:  # the pretraining heads: a corpus has nothing to predict
        raise RecipeError(
            f"{folder}: a {head.name} pretraining run has nothing to predict; fine-tune it (model.name_or_path: {folder}) "
            f"or {head.pipeline_use} with transformers.pipeline('{head.pipeline_task}', model='{folder}')"
        )
    head.labels = list(record["labels"])
    return TrainedRun(out, data, steps, head, model_args, record["labels"], int(batch_size), raw.get("training") or {})


def inference_steps(steps: list) -> list:
    """Steps re-applied to new inputs: those that rewrite text and cover the test split.

    A step may declare `at_inference`; otherwise steps that change rows count (cleaning) and steps that
    remove or add rows (dedupe, filters, augmentation) do not.
    """
    return [s for s in steps if getattr(s, "at_inference", s.effect == "changed") and s.applies_to("test")]


def read_input(spec: str, run: TrainedRun) -> Dataset:
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
        path = Path(spec).expanduser()
        if not path.is_file():
            raise RecipeError(f"--input: {spec!r} does not exist or is not a file")
        if path.suffix.lower() not in DATA_FORMATS:
            raise RecipeError(f"--input: {not_one_of(path.suffix or '(no extension)', list(DATA_FORMATS), 'a supported format')}")
        ds = read_file(str(path))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise RecipeError(
            f"--input {spec}: no text column {', '.join(map(repr, missing))} (the run {run.folder} reads "
            f"{', '.join(columns)}); columns: {', '.join(ds.column_names) or 'none'}"
        )
    return ds


def clean(ds: Dataset, run: TrainedRun) -> Dataset:
    """The text the model reads: the input after the run's inference steps, row for row."""
    ctx = Context(columns=run.data.text_columns, label=run.data.label_column)
    for step in inference_steps(run.steps):
        rows_in = len(ds)
        ds, *_ = step(ds, ctx)
        if len(ds) != rows_in:
            raise RecipeError(f"preprocess step {step.name} changed the number of rows ({rows_in} -> {len(ds)}); it cannot run at inference")
    return ds


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


def predict_batches(run: TrainedRun, ds: Dataset, batch_size: int | None):
    """Yield (rows of the input as a dict of columns, logits) batch by batch; memory holds one batch of texts.

    The model reads the cleaned text; the rows yielded are the input's own, so the output shows what the user gave.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(run.model_args)
    model = run.head.load_model(run.model_args).to(device).eval()
    size = batch_size or run.batch_size
    columns = run.data.text_columns
    cleaned = clean(ds, run).select_columns(columns)
    batches = zip(ds.iter(batch_size=size), cleaned.iter(batch_size=size))
    for batch, model_view in tqdm(batches, total=math.ceil(len(ds) / size), desc="predict", unit="batch", file=sys.stderr):
        texts = [[t if t is not None else "" for t in model_view[c]] for c in columns]
        if hasattr(run.head, "infer"):  # tags per word, generated text: the head makes its own columns
            yield batch, run.head.infer(model, tokenizer, texts, run)
            continue
        encoded = tokenizer(*texts, truncation=True, max_length=run.data.max_length, padding=True, return_tensors="pt").to(device)
        with torch.inference_mode():
            logits = model(**encoded).logits.float().cpu().numpy()
        yield batch, logits


@contextmanager
def open_output(output: str | None, to_stdout: bool):
    """A temporary file beside --output, renamed into place at the end (no half-written file on failure);
    without --output, stdout for `predict` and nothing for `evaluate`."""
    if output is None:
        yield sys.stdout if to_stdout else None
        return
    path = Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(f, frame: pd.DataFrame, fmt: str, first: bool) -> None:
    if fmt == ".jsonl":
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
        f.write(text if text.endswith("\n") else text + "\n")
    else:
        frame.to_csv(f, header=first, index=False)


def run_predictions(args, run: TrainedRun, with_gold: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Write the input's columns plus the head's prediction columns; with_gold: return (gold ids, all logits)."""
    for option in ("output", "metrics", "plots"):
        check_output(getattr(args, option, None), args.input, run, option, formats=OUTPUT_FORMATS if option == "output" else None)
    ds = read_input(args.input, run)
    gold = check_gold(ds, run.data.label_column, run, args.input) if with_gold else None
    # Lists (tags) and long generated text read best as JSON lines: the head's own format unless --output says otherwise.
    fmt = Path(args.output).suffix.lower() if args.output else Path(run.head.predictions_file).suffix
    kept = []  # (n, labels) logits: what the metrics need, never hidden states
    with open_output(args.output, to_stdout=not with_gold) as f:
        for i, (batch, logits) in enumerate(predict_batches(run, ds, args.batch_size)):
            if f is not None:
                frame = pd.DataFrame(batch)
                # The head reads only `.predictions` of a Trainer output; the gold and text columns are the input's own.
                # Heads with `infer` (tags, generated text) yield their columns instead of logits.
                columns = logits if isinstance(logits, dict) else run.head.prediction_columns(SimpleNamespace(predictions=logits), None, None)
                for name, values in columns.items():
                    frame[name] = [" ".join(v) if fmt == ".csv" and isinstance(v, list) else v for v in values]
                write_rows(f, frame, fmt, first=i == 0)
            if with_gold:
                kept.append(logits)
    if args.output:
        print(f"wrote {len(ds)} predictions to {args.output}", file=sys.stderr)
    return gold, (np.concatenate(kept) if with_gold else None)


def check_gold(ds: Dataset, column: str, run: TrainedRun, spec: str) -> np.ndarray:
    """Gold label ids in the run's label order; refuse a missing column, empty labels, or labels the run never saw."""
    if column not in ds.column_names:
        raise RecipeError(
            f"--input {spec}: no gold label column {column!r} (the run's data.label_column); columns: {', '.join(ds.column_names)}"
        )
    values = ds[column]
    missing = sum(v is None for v in values)
    if missing:
        raise RecipeError(f"--input {spec}: {missing} rows have no gold label in column {column!r}")
    index = {name: i for i, name in enumerate(run.labels)}
    unseen = sorted({str(v) for v in values} - set(index))
    if unseen:
        raise RecipeError(
            f"--input {spec}: labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}; its labels: {', '.join(run.labels)}"
        )
    if not values:
        raise RecipeError(f"--input {spec}: no rows to evaluate")
    return np.array([index[str(v)] for v in values])


def predict_command(args) -> int:
    run_predictions(args, load_run(args.run), with_gold=False)
    return 0


def evaluate_command(args) -> int:
    run = load_run(args.run)
    if not hasattr(run.head, "evaluation"):
        raise RecipeError(f"evaluate: head {run.head.name!r} has no evaluation table yet; its scores are in {run.folder / 'metrics.json'}")
    gold, logits = run_predictions(args, run, with_gold=True)
    details = run.head.evaluation(gold, logits, run.labels)
    print("\n".join(evaluation_text(details, run, args.input, len(gold))))
    if args.metrics:
        write_json(Path(args.metrics), {"run": str(run.folder), "input": args.input, "rows": len(gold), **details})
    if args.plots:
        for _, path in run.head.plots(gold, logits, run.labels, Path(args.plots), Path(args.input).name):
            print(f"plot: {path}", file=sys.stderr)
    return 0


def evaluation_text(details: dict, run: TrainedRun, spec: str, rows: int) -> list[str]:
    lines = [f"evaluation of {run.folder} on {spec} ({rows} rows)", ""]
    lines += markdown_table(["metric", "value"], [[k, v] for k, v in details["scores"].items()])
    if details.get("per_class"):
        lines += ["", *markdown_table(list(details["per_class"][0]), [list(r.values()) for r in details["per_class"]])]
    if details.get("confusion_matrix"):
        lines += ["", "confusion matrix (rows: gold, columns: predicted)", ""]
        rows_ = [[name, *row] for name, row in zip(run.labels, details["confusion_matrix"])]
        lines += markdown_table(["gold \\ predicted", *run.labels], rows_)
    return lines
