"""int8 for an exported graph whose every answer depends on its own input only.

Each MatMul with a constant weight becomes an integer matmul: the weight 8-bit with one scale per output channel
(fixed at export), the activation 8-bit with one scale per token, computed from that token's own values at run
time (its largest magnitude / 127). onnxruntime's `quantize_dynamic` instead picks one activation
scale per call from the whole batch, so a text's answer moved with whatever was batched or padded beside it (up to
8e-3 in probability on MiniLM/SST-2, and a flipped label). Per-token scales never look across tokens, the integer
matmul is exact, and a pad token changes no real token's scale; the attention and layer norms stay fp32 as
exported. The word embeddings are stored int8 (one scale per hidden channel), dequantized after the lookup.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Activations and weights both uint8 around 128. uint8 x int8 is faster where the CPU has VNNI, but on AVX2 alone
# onnxruntime's uint8 x int8 kernel adds products in pairs into int16, which saturates (255 * 127 * 2 > 32767):
# measured, it moved outputs by half their range. uint8 x uint8 widens to int16 first and is exact everywhere.
ZERO_POINT = 128


def quantize_per_token(source: str, target: str) -> int:
    """Write `source` (an fp32 ONNX graph) to `target` with its weight MatMuls int8 as above; return how many."""
    model = onnx.load(source)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    nodes, added, quantized, done = [], [], {}, 0

    def constant(name, array):
        added.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != TensorProto.FLOAT:
            nodes.extend(quantize_gather(node, weights, users, constant) or [node])
            continue
        x, w, y = node.input[0], numpy_helper.to_array(weight), node.output[0]
        if x not in quantized:  # Q, K and V read one layer norm: quantize it once
            p = f"{x}_int8"
            nodes += [
                helper.make_node("Abs", [x], [f"{p}_abs"]),
                helper.make_node("ReduceMax", [f"{p}_abs", constant(f"{p}_axes", np.array([-1], np.int64))], [f"{p}_max"], keepdims=1),
                # An all-zero token keeps a nonzero scale (its integers are then all zero point).
                helper.make_node("Max", [f"{p}_max", constant(f"{p}_tiny", np.float32(1e-12))], [f"{p}_safe"]),
                helper.make_node("Div", [f"{p}_safe", constant(f"{p}_127", np.float32(127))], [f"{p}_scale"]),
                helper.make_node("Div", [x, f"{p}_scale"], [f"{p}_scaled"]),
                helper.make_node("Round", [f"{p}_scaled"], [f"{p}_round"]),
                helper.make_node("Add", [f"{p}_round", constant(f"{p}_zp_f", np.float32(ZERO_POINT))], [f"{p}_shift"]),
                helper.make_node("Cast", [f"{p}_shift"], [f"{p}_q"], to=TensorProto.UINT8),
            ]
            constant(f"{p}_zp", np.uint8(ZERO_POINT))
            quantized[x] = (f"{p}_q", f"{p}_scale", f"{p}_zp")
        q, scale, zp = quantized[x]
        channel = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32) / 127
        wq = (np.clip(np.round(w / channel), -127, 127) + ZERO_POINT).astype(np.uint8)
        p = f"{y}_int8"
        nodes += [
            helper.make_node("MatMulInteger", [q, constant(f"{p}_w", wq), zp, zp], [f"{p}_acc"]),
            helper.make_node("Cast", [f"{p}_acc"], [f"{p}_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}_f", constant(f"{p}_wscale", channel)], [f"{p}_w_scaled"]),
            helper.make_node("Mul", [f"{p}_w_scaled", scale], [y]),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, target)
    return done


def quantize_gather(node, weights, users, constant):
    """The word-embedding lookup on an int8 table (the largest weight: 30k rows on MiniLM), dequantized per hidden
    channel after the lookup; a row's vector depends on its token id only. None: the node stays as it is."""
    table = weights.get(node.input[0]) if node.op_type == "Gather" else None
    if table is None or len(table.dims) != 2 or table.dims[0] < 1024 or users.get(table.name) != 1:
        return None
    array = numpy_helper.to_array(table)
    channel = np.maximum(np.abs(array).max(axis=0), 1e-12).astype(np.float32) / 127
    p = f"{node.output[0]}_int8"
    constant(f"{p}_table", np.clip(np.round(array / channel), -127, 127).astype(np.int8))
    return [
        helper.make_node("Gather", [f"{p}_table", node.input[1]], [f"{p}_rows"], axis=0),
        helper.make_node("DequantizeLinear", [f"{p}_rows", constant(f"{p}_scale", channel)], node.output, axis=-1),
    ]
