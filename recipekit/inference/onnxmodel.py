"""An exported run's ONNX graph in the place of its PyTorch model: `run.py predict`, `evaluate` and `serve` read an
exported folder through the same Trainer, collator and head decision rule as the run itself (inference/runs.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from ..core.errors import RecipeError

ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"  # how the folder was exported: format, quantization, the run it came from


def require(module: str, command: str):
    """Import a package of the `serve` extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RecipeError(f"{command}: needs {module.split('.')[0]}, which is not installed; pip install 'recipekit[serve]'") from None


def is_exported(folder) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


class OnnxModel(torch.nn.Module):
    """Takes the collator's tensors, returns the logits as the PyTorch model would; Trainer's predict loop and the
    head's `prediction_columns` cannot tell the difference."""

    main_input_name = "input_ids"

    def __init__(self, folder, threads: int | None = None):
        super().__init__()
        ort = require("onnxruntime", "ONNX model")
        self.config = AutoConfig.from_pretrained(folder)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(Path(folder) / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        # Trainer moves the model and reads its dtype; a parameterless module would have neither.
        self.register_buffer("anchor", torch.zeros(1), persistent=False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        # `labels` is in the signature so Trainer keeps the column for `evaluate`; the loss is the head's.
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feed = {name: given[name].cpu().numpy().astype(np.int64) for name in self.input_names}
        logits = self.session.run(None, feed)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))
