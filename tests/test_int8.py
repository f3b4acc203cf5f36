"""An int8 export's answer for a text is the same whatever it is batched with: alone, beside short texts, or padded
beside a long one, through the prediction path `run.py serve` uses (probabilities within 1e-6, labels equal), for
every exportable head; and the int8 graph stays close to the fp32 one."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli
from test_serve import EXPORTABLE, close, gold_file, inputs_of, train

from recipekit.commands.serve import Model
from recipekit.inference.quantize import quantize_per_token
from recipekit.inference.runs import open_run


@pytest.fixture(scope="module", params=EXPORTABLE)
def int8_export(request, tmp_path_factory):
    run = train(request, tmp_path_factory, request.param)
    out = run.parent / "onnx-int8"
    if not out.exists():
        assert run_cli(["export", run, "--format", "onnx", "--quantize", "int8", "--output", out]) == 0
    return request.param, run, out


def rows(values) -> list[tuple[str, ...]]:
    return [(v,) if isinstance(v, str) else tuple(v) for v in values]


@pytest.mark.slow  # a trained run and an int8 export per head
def test_an_int8_answer_does_not_depend_on_its_batch_mates(int8_export):
    case, run, out = int8_export
    assert json.loads((out / "export.json").read_text())["quantize"] == "int8"
    texts = rows(inputs_of(gold_file(run), case))[:12]
    # A long mate pads every other row of its batch to its length, and its large activations would set a whole
    # batch's scale if scales were chosen per batch.
    long = tuple(" ".join([t] * 12) for t in texts[0])
    model = Model(open_run(str(out)), batch_size=32)
    try:
        alone = [model([t])[0] for t in texts]
        together = model(texts)
        padded = model([long, *texts])[1:]
        reversed_ = model(texts[::-1])[::-1]
        in_small_batches = [a for i in range(0, len(texts), 5) for a in model(texts[i:i + 5])]
    finally:
        model.close()
    for batch in (together, padded, reversed_, in_small_batches):
        close(batch, alone, 1e-6)


def test_int8_graph_is_close_to_fp32_and_exact_across_batches(tmp_path):
    """quantize_per_token on a two-layer graph: a row's output is bit-identical whatever the other rows hold (one
    of them a thousand times larger), and within int8's rounding of the fp32 graph."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(16, 32)).astype(np.float32), rng.normal(size=(32, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "fp32.onnx")
    assert quantize_per_token(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx")) == 2
    fp32, int8 = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]) for f in ("fp32.onnx", "int8.onnx"))
    x = rng.normal(size=(1, 5, 16)).astype(np.float32)
    big = np.concatenate([x, 1000 * rng.normal(size=(3, 5, 16)).astype(np.float32)])
    alone = int8.run(None, {"x": x})[0]
    assert np.array_equal(int8.run(None, {"x": big})[0][:1], alone)
    assert np.array_equal(int8.run(None, {"x": np.concatenate([big[::-1], x])})[0][-1:], alone)
    want = fp32.run(None, {"x": x})[0]
    relative = np.abs(alone - want).max() / np.abs(want).max()
    assert 0 < relative < 0.02
