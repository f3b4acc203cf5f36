"""`run.py export RUN --format onnx [--quantize int8]`: a finished run's model as an ONNX graph that predicts as the run.

The graph is torch.onnx.export's (the dynamo exporter) of the model's one forward pass, inputs to logits, with the
batch and sequence dimensions left free; int8 is inference/quantize.py's (int8 weights, each token's activations
quantized with its own scale at run time, so an answer never depends on what it is batched with). Everything after
the logits stays in Python: the exported folder carries the
run's recipe.yaml, head state (labels, thresholds, target scale), tokenizer and metrics, so `run.py predict`,
`evaluate` and `serve` read it as a run, through the same tokenization and decision rule (recipekit/inference/).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.errors import RecipeError
from ..core.files import follow_umask, usual_mode
from ..heads.base import STATE_FILE
from ..inference.onnxmodel import EXPORT_FILE, ONNX_FILE, OnnxModel, require
from ..inference.quantize import quantize_per_token
from ..inference.runs import TrainedRun, open_run
from ..modeling.loading import load_tokenizer
from ..outputs.folder import FINISHED_MARKER

# Copied as they are: what makes the folder read as the run (recipe, head state, scores, report).
RUN_FILES = ["recipe.yaml", STATE_FILE, "data_report.json", "report.md", FINISHED_MARKER]
OPSET = 18  # the dynamo exporter's own; onnxruntime 1.17 and later run it


class Logits(torch.nn.Module):
    """The model's forward pass with the logits as its one output: the graph's whole contract."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def export_command(args) -> int:
    run = open_run(args.run)
    if run.exported:
        raise RecipeError(f"export: {args.run} is already an ONNX export; export the run it came from ({source_of(run)})")
    if run.head.not_exportable:
        raise RecipeError(f"export: head {run.head.name!r} cannot be exported to ONNX: {run.head.not_exportable}")
    require("onnx", "export")
    require("onnxscript", "export")  # torch.onnx.export's dynamo exporter writes the graph with it
    if args.quantize:
        require("onnxruntime", "export --quantize")  # the check below runs the quantized graph
    out = Path(args.output or default_output(run.folder, args.quantize)).expanduser()
    if out.resolve().is_relative_to(run.folder.resolve()):
        raise RecipeError(f"--output: {str(out)!r} is inside the run folder {run.folder}; a trained run is never written to")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise RecipeError(f"--output: {str(out)!r} exists and is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(work, usual_mode(work.stat()))  # mkdtemp's 0700 would become the export folder's mode
        with follow_umask(work):
            drift = write_export(run, work, args.quantize)
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = (out / ONNX_FILE).stat().st_size / 2**20
    what = f"ONNX {args.quantize or 'fp32'}"
    print(f"exported {run.folder} ({run.head.name}) to {out}: {what}, {size:.1f} MiB; "
          f"largest probability difference from PyTorch on a sample: {drift:.2e}")
    print(f"predict with: python run.py predict {out} --input FILE; serve with: python run.py serve {out}")
    return 0


def default_output(folder: Path, quantize: str | None) -> str:
    # Beside the run, never inside it: a finished run's folder is read, never written.
    return f"{folder.resolve()}-onnx{'-' + quantize if quantize else ''}"


def source_of(run: TrainedRun) -> str:
    try:
        return json.loads((run.folder / EXPORT_FILE).read_text()).get("source", "?")
    except (OSError, ValueError):
        return "?"


def sample_inputs(run: TrainedRun, tokenizer) -> dict:
    """Two rows of different lengths, padded: the exporter sees a real batch, and the check below sees padding."""
    texts = [["a short text", "a somewhat longer second text, with padding in the first row"]] * len(run.data.text_columns)
    encoded = tokenizer(*texts, padding=True, truncation=True, max_length=run.data.max_length, return_tensors="pt")
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}


def write_export(run: TrainedRun, folder: Path, quantize: str | None) -> float:
    """Write the graph and the run's files into `folder`; return the largest probability difference between the
    exported graph and the PyTorch model on a sample batch (the head's own probabilities)."""
    tokenizer = load_tokenizer(run.model_args_for_tokenizer)
    model = run.load_model().eval()
    inputs = sample_inputs(run, tokenizer)
    fp32 = folder / (f"fp32-{ONNX_FILE}" if quantize else ONNX_FILE)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    try:
        with quiet(), torch.no_grad():
            torch.onnx.export(
                Logits(model), (), str(fp32), kwargs=inputs, input_names=list(inputs), output_names=["logits"],
                dynamic_shapes={k: {0: batch, 1: sequence} for k in inputs}, opset_version=OPSET, dynamo=True,
                external_data=False, verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; one line naming the model is what the user can act on
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"export: torch.onnx.export failed on {type(model).__name__}: {type(e).__name__}: {first}") from None
    if quantize:
        with quiet():
            quantize_per_token(str(fp32), str(folder / ONNX_FILE))
        fp32.unlink()
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for name in RUN_FILES:
        if (run.folder / name).is_file():
            shutil.copy2(run.folder / name, folder / name)
    (folder / EXPORT_FILE).write_text(json.dumps({
        "format": "onnx", "quantize": quantize, "source": str(run.folder.resolve()), "head": run.head.name,
        "inputs": list(inputs), "opset": OPSET, "torch": torch.__version__,
    }, indent=2) + "\n")
    with torch.no_grad():
        want = run.head.predictions_of(model(**inputs).logits.float().numpy())
    got = run.head.predictions_of(OnnxModel(folder)(**inputs).logits.numpy())
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))))


@contextlib.contextmanager
def quiet():
    """The exporter reports each of its passes, and quantization advises pre-processing: keep the command's output to its result."""
    loggers = [logging.getLogger(), logging.getLogger("torch"), logging.getLogger("torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
