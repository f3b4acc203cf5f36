"""int8 exports measured against fp32 on MiniLM/SST-2: speed at batch 32, accuracy, and whether a text's answer depends
on what it is batched with.

    python bench/bench_int8.py --run runs/bench_int8/run     # a finished sst2_minilm run (bench_serve.py trains one)

Formats: PyTorch fp32 (what `run.py serve` runs for an unexported run), ONNX fp32, ONNX int8 as `run.py export
--quantize int8` writes it (per-token activation scales, 7-bit int8 weights: inference/quantize.py), onnxruntime's
quantize_static calibrated on the 872 validation sentences (fixed activation scales, per-channel 7-bit weights, uint8
activations; QOperator and QDQ formats, MatMuls with a weight only) and its quantize_dynamic (one activation scale
per batch: what export wrote first). Speed: the graph alone (tokenized once; one call per 32 sentences of SST-2
validation in length order, as the prediction path batches; every --stride'th batch), the formats interleaved batch
by batch in a rotating order (the machine is shared: each format sees the same load), --repeats rounds: medians,
and each ratio to fp32 from the same round. Kernels: one MatMul of MiniLM's shapes (768 tokens) in fp32, uint8 x
uint8 and uint8 x int8, interleaved, median: the ceiling int8 can give this CPU. Accuracy: on all 872 validation sentences. Batch mates: --probe texts each
predicted alone and inside a 32-row batch of random others (padded to the longest), largest probability change and
labels that changed. Writes bench/results/int8.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

from record import record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run of recipes/sst2_minilm.yaml")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the alternating speed measurement")
    parser.add_argument("--probe", type=int, default=50, help="texts predicted alone and inside a batch")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for onnxruntime and torch")
    parser.add_argument("--stride", type=int, default=1, help="time every n-th batch of 32 (accuracy uses all)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from recipekit.commands.export import quiet, write_export
    from recipekit.inference.runs import open_run
    from recipekit.modeling.loading import load_tokenizer

    torch.set_num_threads(args.threads)
    run = open_run(args.run)
    work = Path(args.run).resolve().parent / "bench_int8_exports"
    for name, quantize in (("fp32", None), ("int8", "int8")):
        if not (work / name / "model.onnx").exists():
            (work / name).mkdir(parents=True, exist_ok=True)
            write_export(run, work / name, quantize)
    if not (work / "dynamic.onnx").exists():
        with quiet():  # the settings export used before per-token scales
            quantize_dynamic(str(work / "fp32" / "model.onnx"), str(work / "dynamic.onnx"), weight_type=QuantType.QInt8, per_channel=True)

    with open(DATA / "sst2" / "validation.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts, gold = [r["text"] for r in rows], [r["label_name"] for r in rows]
    tokenizer = load_tokenizer(run.model_args_for_tokenizer)

    def encode(batch):
        e = tokenizer(batch, padding=True, truncation=True, max_length=run.data.max_length, return_tensors="np")
        return {k: e[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    class Validation(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([encode(texts[k:k + 32]) for k in range(0, len(texts), 32)])

        def get_next(self):
            return next(self.batches, None)

    for name, form in (("static_qop", QuantFormat.QOperator), ("static_qdq", QuantFormat.QDQ)):
        if not (work / f"{name}.onnx").exists():
            with quiet():  # 7-bit weights: uint8 x int8 without VNNI saturates with 8 (inference/quantize.py)
                quantize_static(str(work / "fp32" / "model.onnx"), str(work / f"{name}.onnx"), Validation(), quant_format=form,
                                op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for name, path in (
        ("ONNX fp32", work / "fp32" / "model.onnx"), ("ONNX int8 (per-token, export)", work / "int8" / "model.onnx"),
        ("ONNX int8 (quantize_static, QOperator)", work / "static_qop.onnx"), ("ONNX int8 (quantize_static, QDQ)", work / "static_qdq.onnx"),
        ("ONNX int8 (quantize_dynamic, first export)", work / "dynamic.onnx"))}
    model = run.load_model().eval()

    def logits_of(name, feed):
        if name == "PyTorch fp32":
            with torch.no_grad():
                return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.float().numpy()
        return sessions[name].run(None, feed)[0]

    names = ["PyTorch fp32", *sessions]
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i])["input_ids"]))
    feeds = [encode([texts[i] for i in order[k:k + 32]]) for k in range(0, len(order), 32)]
    results = {name: {} for name in names}
    for name in names:
        logits = np.concatenate([logits_of(name, f) for f in feeds])  # also the warm-up
        predicted = np.asarray(run.labels)[logits.argmax(1)]
        results[name]["accuracy"] = float(np.mean(predicted == np.asarray([gold[i] for i in order]))) * 100

    rounds = {name: [] for name in names}
    timed = feeds[::args.stride]
    count = sum(len(f["input_ids"]) for f in timed)
    for r in range(args.repeats):
        spent = dict.fromkeys(names, 0.0)
        for k, f in enumerate(timed):
            turn = names[k % len(names):] + names[:k % len(names)]
            for name in turn if (r + k) % 2 == 0 else turn[::-1]:
                started = time.perf_counter()
                logits_of(name, f)
                spent[name] += time.perf_counter() - started
        for name in names:
            rounds[name].append(count / spent[name])
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n} {rounds[n][-1]:.1f}" for n in names), flush=True)
    for name in names:
        results[name]["samples_per_s"] = float(np.median(rounds[name]))
        results[name]["rounds"] = rounds[name]
        for base in ("PyTorch fp32", "ONNX fp32"):
            results[name][f"vs {base}"] = float(np.median(np.asarray(rounds[name]) / np.asarray(rounds[base])))

    rng = np.random.default_rng(0)
    probe = rng.choice(len(texts), args.probe, replace=False)

    def probs(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    for name in names:
        drift, flips = [], 0
        for i in probe:
            alone = probs(logits_of(name, encode([texts[i]])))[0]
            mates = [int(j) for j in rng.choice(len(texts), 31, replace=False) if j != i][:31]
            at = int(rng.integers(0, 32))
            batch = [texts[j] for j in mates[:at]] + [texts[i]] + [texts[j] for j in mates[at:]]
            inside = probs(logits_of(name, encode(batch)))[at]
            drift.append(float(np.abs(inside - alone).max()))
            flips += int(inside.argmax() != alone.argmax())
        results[name].update(batch_drift_median=float(np.median(drift)), batch_drift_max=float(max(drift)), labels_changed=flips)

    print(f"\nSST-2 validation ({len(texts)} sentences), graph alone, batch 32 in length order, {args.threads} threads, "
          f"median of {args.repeats} alternating rounds; batch mates: {args.probe} texts alone vs inside a 32-row batch\n")
    print("| format | samples/s | vs PyTorch fp32 | vs ONNX fp32 | accuracy % | batch-mate drift median / max | labels changed |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        r = results[name]
        print(f"| {name} | {r['samples_per_s']:.1f} | {r['vs PyTorch fp32']:.2f}x | {r['vs ONNX fp32']:.2f}x | {r['accuracy']:.2f} "
              f"| {r['batch_drift_median']:.1e} / {r['batch_drift_max']:.1e} | {r['labels_changed']} / {args.probe} |")
    kernels = matmul_kernels(ort, args.threads)
    print("\none MatMul, 768 tokens, vs fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in kernels.items()))
    load = os.getloadavg()[0]
    record("int8", {**flat(results, names), **{k: round(v, 2) for k, v in kernels.items()}},
           note=f"{len(texts)} sentences (speed: {count}, every {args.stride}th batch of 32), {args.threads} threads, "
           f"{args.repeats} rounds interleaved batch by batch, {args.probe} probe texts; shared machine, load average {load:.1f} at the end")


def matmul_kernels(ort, threads: int, repeats: int = 15) -> dict:
    """{kernel}_matmul_{k}x{n}_vs_fp32: one MatMul of MiniLM's shapes on 768 tokens (24 rows of 32 texts), fp32 vs
    onnxruntime's integer kernels, interleaved, median: what int8 can gain on this CPU before anything else runs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def session(kind, k, n):
        elem, dtype = (TensorProto.FLOAT, np.float32) if kind == "fp32" else (TensorProto.UINT8, np.uint8)
        op, out = ("MatMul", TensorProto.FLOAT) if kind == "fp32" else ("MatMulInteger", TensorProto.INT32)
        w = rng.normal(size=(k, n)).astype(np.float32) if kind == "fp32" else rng.integers(0, 64, (k, n)).astype(
            np.int8 if kind == "u8s8" else np.uint8)
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", elem, ["m", k])],
                                  [helper.make_tensor_value_info("y", out, ["m", n])], [numpy_helper.from_array(w, "w")])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        x = rng.random((768, k)).astype(np.float32) if kind == "fp32" else rng.integers(0, 256, (768, k)).astype(dtype)
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), {"x": x}

    out = {}
    for k, n in ((384, 1536), (1536, 384)):
        kinds = {kind: session(kind, k, n) for kind in ("fp32", "u8u8", "u8s8")}
        spent = {kind: [] for kind in kinds}
        for r in range(repeats):
            for kind in list(kinds) if r % 2 else list(kinds)[::-1]:
                started = time.perf_counter()
                for _ in range(10):
                    kinds[kind][0].run(None, kinds[kind][1])
                spent[kind].append(time.perf_counter() - started)
        for kind in ("u8u8", "u8s8"):
            out[f"{kind}_matmul_{k}x{n}_vs_fp32"] = float(np.median(np.asarray(spent["fp32"]) / np.asarray(spent[kind])))
    return out


# The key of each format in bench/results/int8.json, in the order `names` lists them.
KEYS = ("pytorch_fp32", "onnx_fp32", "int8_per_token", "int8_static_qop", "int8_static_qdq", "int8_dynamic")


def flat(results: dict, names: list[str]) -> dict:
    """{format_key}_{figure}: the numbers the docs quote, one flat level as bench/record.py files hold them."""
    out = {}
    for key, name in zip(KEYS, names):
        r = results[name]
        out.update({
            f"{key}_samples_per_s": round(r["samples_per_s"], 1), f"{key}_vs_pytorch": round(r["vs PyTorch fp32"], 2),
            f"{key}_vs_onnx_fp32": round(r["vs ONNX fp32"], 2), f"{key}_accuracy": round(r["accuracy"], 2),
            f"{key}_drift_max": float(f"{r['batch_drift_max']:.1e}"), f"{key}_labels_changed": r["labels_changed"],
        })
    return out


if __name__ == "__main__":
    main()
