"""int8 for an exported graph whose every answer depends on its own input only.

Each MatMul with a constant weight becomes an integer matmul: the weight int8 with one scale per output channel
(fixed at export), the activation uint8 with one scale per token, computed from that token's own values at run
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

# Activations uint8 around 128, weights int8 in [-63, 63] (7 bits). Without VNNI (AVX2 alone) onnxruntime's
# uint8 x int8 kernel adds products in pairs into int16 (vpmaddubsw), which saturates with full 8-bit weights
# (255 * 127 * 2 > 32767; measured, it moved outputs by half their range) but not with 7-bit ones
# (255 * 63 * 2 = 32130). That kernel is the fast one: 1.44-1.66x fp32 on MiniLM's matmul shapes on an AVX2 CPU,
# where uint8 x uint8 (exact with 8 bits, but widened to int16 first) was 1.22-1.27x (bench/results/int8.json).
ZERO_POINT = 128
WEIGHT_MAX = 63


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
                helper.make_node("ReduceMax", [f"{p}_abs", constant(f"{p}_axes", np.array([-1], np.int64))], [f"{p}_max0"], keepdims=1),
                # An all-zero token keeps a nonzero scale (its integers are then all zero point).
                helper.make_node("Max", [f"{p}_max0", constant(f"{p}_tiny", np.float32(1e-12))], [f"{p}_max"]),
                helper.make_node("Div", [constant(f"{p}_127", np.float32(127)), f"{p}_max"], [f"{p}_inverse"]),
                helper.make_node("Mul", [x, f"{p}_inverse"], [f"{p}_scaled"]),
                # Scale 1 and zero point 128: round half to even, shift, saturate and cast in one node.
                helper.make_node("QuantizeLinear", [f"{p}_scaled", constant(f"{p}_one", np.float32(1)),
                                                    constant(f"{p}_zp", np.uint8(ZERO_POINT))], [f"{p}_q"]),
            ]
            quantized[x] = (f"{p}_q", f"{p}_max", f"{p}_zp", f"{p}_one")
        q, token_max, zp, one = quantized[x]
        channel = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32) / WEIGHT_MAX
        wq = np.clip(np.round(w / channel), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
        p = f"{y}_int8"
        nodes += [
            # onnxruntime's integer matmul, cast and per-channel scale in one kernel; its activation scale is one
            # number per call, so each token's own (its max / 127) is multiplied in after.
            helper.make_node("MatMulIntegerToFloat", [q, constant(f"{p}_w", wq), one, constant(f"{p}_wscale", channel / 127), zp],
                             [f"{p}_f"], domain="com.microsoft"),
            helper.make_node("Mul", [f"{p}_f", token_max], [y]),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if done and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
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
