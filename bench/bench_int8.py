"""int8 exports measured against fp32 on MiniLM/SST-2: speed at batch 32, accuracy, and whether a text's answer depends
on what it is batched with.

    python bench/bench_int8.py --run runs/bench_int8/run     # a finished sst2_minilm run (bench_serve.py trains one)

Formats: PyTorch fp32, ONNX fp32, ONNX int8 as `run.py export --quantize int8` writes it (per-token activation
scales, inference/quantize.py) and onnxruntime's quantize_dynamic (one activation scale per batch: what export wrote
before). Speed: the graph alone (tokenized once; one call per 32 sentences of SST-2 validation in length order, as
the prediction path batches), the formats measured back to back, alternating, --repeats times: medians, and each
ratio to fp32 from the same round. Accuracy: on all 872 validation sentences. Batch mates: --probe texts each
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
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

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

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for name, path in (
        ("ONNX fp32", work / "fp32" / "model.onnx"), ("ONNX int8 (per-token, export)", work / "int8" / "model.onnx"),
        ("ONNX int8 (quantize_dynamic, before)", work / "dynamic.onnx"))}
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
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            for f in feeds:
                logits_of(name, f)
            rounds[name].append(len(texts) / (time.perf_counter() - started))
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
    load = os.getloadavg()[0]
    record("int8", flat(results, names), note=f"{len(texts)} sentences, batch 32, {args.threads} threads, {args.repeats} rounds, "
           f"{args.probe} probe texts, load average {load:.1f} at the end")


# The key of each format in bench/results/int8.json, in the order `names` lists them.
KEYS = ("pytorch_fp32", "onnx_fp32", "int8_per_token", "int8_dynamic")


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
