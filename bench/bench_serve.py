"""From a finished run to a served endpoint, measured: PyTorch fp32 against its ONNX exports (fp32, int8), offline and
behind `run.py serve`.

    python bench/bench_serve.py                 # 2 CPU cores: about 6 minutes (training MiniLM is 2 of them)
    python bench/bench_serve.py --reuse         # keep the run and exports of a previous call

1. MiniLM fine-tuned on 2,000 SST-2 training sentences for one epoch (recipes/sst2_minilm.yaml), then
   `run.py export --format onnx` and `--quantize int8`.
2. Offline, through the run's own prediction path (inference.Predictor: tokenization, Trainer, decision rule), on
   SST-2 validation (872 sentences): samples/s and p50/p99 latency per call at batch 1 (the first --single
   sentences, one call each) and batch 32 (all 872, 28 calls); accuracy of each format on all 872; the largest
   probability difference from PyTorch.
3. A load test of `run.py serve` on the int8 export (its own process, loopback): 1, 8 and 32 concurrent clients,
   each sending one sentence per request, the 872 sentences once per level (and at most --seconds per level):
   requests/s, p50/p99 latency, failed requests.

Targets: int8 >= 2x PyTorch fp32 samples/s at batch 32, accuracy within 0.5 points; ONNX fp32 probabilities
within 1e-4 of PyTorch; the server at 32 clients >= 80% of offline batch-32 samples/s of the same format, with
no failed request. The machine may be shared: rerun when quiet, compare ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def sh(*argv) -> None:
    subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, argv)], cwd=ROOT, check=True)


def prepare(out: Path, reuse: bool, train_samples: int) -> dict[str, Path]:
    run = out / "run"
    if not (reuse and (run / "metrics.json").exists()):
        sh("recipes/sst2_minilm.yaml", f"data.max_train_samples={train_samples}", f"training.output_dir={run}",
           "training.per_device_eval_batch_size=32", "training.save_strategy=no", "--overwrite")
    folders = {"PyTorch fp32": run, "ONNX fp32": out / "onnx-fp32", "ONNX int8": out / "onnx-int8"}
    for name, quantize in (("ONNX fp32", None), ("ONNX int8", "int8")):
        if not (reuse and (folders[name] / "model.onnx").exists()):
            sh("export", run, "--format", "onnx", "--output", folders[name], "--overwrite", *(["--quantize", quantize] if quantize else []))
    return folders


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return float(p50), float(p99)


def offline(folder: Path, texts: list[str], gold: list[str], single: int) -> dict:
    """The run's own prediction path, loaded once, as the server uses it."""
    from datasets import Dataset

    from recipekit.inference.predictor import Predictor
    from recipekit.inference.runs import open_run

    run = open_run(str(folder))
    out = {}
    with Predictor(run, batch_size=32) as predictor:
        view = Dataset.from_dict({"text": texts})
        predictor.predict(view.select(range(32)))  # warm-up: first-call allocations and lazy imports
        for batch, rows in ((1, single), (32, len(texts))):
            seconds, columns = [], {}
            started = time.perf_counter()
            for start in range(0, rows, batch):
                t = time.perf_counter()
                part = predictor.predict(view.select(range(start, min(start + batch, rows)))).columns
                seconds.append(time.perf_counter() - t)
                for k, v in part.items():
                    columns.setdefault(k, []).extend(v)
            total = time.perf_counter() - started
            p50, p99 = percentiles(seconds)
            out[batch] = {"samples_per_s": rows / total, "p50_ms": p50, "p99_ms": p99}
            if batch == 32:
                out["columns"] = columns
    out["accuracy"] = float(np.mean([p == g for p, g in zip(out["columns"]["predicted"], gold)]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn: http.client.HTTPConnection, text: str) -> int:
    conn.request("POST", "/predict", body=json.dumps({"text": text}), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def load_test(folder: Path, texts: list[str], levels: list[int], seconds: float) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", str(folder), "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(port, server)
        results = {}
        for clients in levels:
            results[clients] = drive(port, texts, clients, seconds)
        return results
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def wait_until_up(port: int, server) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not come up")


def drive(port: int, texts: list[str], clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own keep-alive connection, share the sentences (each sent once)."""
    lock, nxt, latencies, failures = threading.Lock(), [0], [], [0]
    deadline = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(texts):
                return
            t = time.perf_counter()
            try:
                ok = post(conn, texts[i]) == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                latencies.append(time.perf_counter() - t)
                failures[0] += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return {"requests": len(latencies), "requests_per_s": len(latencies) / total, "p50_ms": p50, "p99_ms": p99, "failed": failures[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_serve"), help="folder for the run, its exports and results.json")
    parser.add_argument("--reuse", action="store_true", help="keep a run and exports already in --out")
    parser.add_argument("--train-samples", type=int, default=2000, help="SST-2 training sentences (data.max_train_samples)")
    parser.add_argument("--single", type=int, default=200, help="sentences predicted one call each for the batch-1 numbers")
    parser.add_argument("--seconds", type=float, default=120, help="most seconds per load-test level")
    args = parser.parse_args()
    import pandas as pd

    from recipekit.core import console

    console.configure(False)
    out = Path(args.out)
    folders = prepare(out, args.reuse, args.train_samples)
    validation = pd.read_csv(DATA / "sst2" / "validation.csv")
    texts, gold = validation["text"].tolist(), validation["label_name"].tolist()
    rows, results = [], {}
    for name, folder in folders.items():
        results[name] = offline(folder, texts, gold, args.single)
    base = results["PyTorch fp32"]
    prob = next(k for k in base["columns"] if k.startswith("prob_"))
    for name, r in results.items():
        drift = float(np.max(np.abs(np.asarray(r["columns"][prob]) - np.asarray(base["columns"][prob]))))
        rows.append([name, f"{r[1]['samples_per_s']:.1f}", f"{r[1]['p50_ms']:.1f} / {r[1]['p99_ms']:.1f}",
                     f"{r[32]['samples_per_s']:.1f}", f"{r[32]['p50_ms']:.0f} / {r[32]['p99_ms']:.0f}",
                     f"{r[32]['samples_per_s'] / base[32]['samples_per_s']:.2f}x", f"{100 * r['accuracy']:.2f}", f"{drift:.1e}"])
        r["max_prob_diff_vs_pytorch"] = drift
    for r in results.values():
        del r["columns"]  # 872 rows per format: kept out of results.json
    served = "ONNX int8"
    load = load_test(folders[served], texts, [1, 8, 32], args.seconds)
    lines = ["offline, the run's prediction path (Predictor), SST-2 validation (872 sentences)", "",
             ("| format | batch 1 samples/s | batch 1 p50 / p99 ms | batch 32 samples/s | batch 32 p50 / p99 ms "
              "| vs PyTorch (batch 32) | accuracy % | max prob. diff. vs PyTorch |"),
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    offline32 = results[served][32]["samples_per_s"]
    lines += ["", f"`run.py serve` on the {served} export, one sentence per request, loopback (offline batch 32: {offline32:.1f} samples/s)", "",
              "| clients | requests | requests/s | p50 / p99 ms | vs offline batch 32 | failed |", "|---|---|---|---|---|---|"]
    for clients, r in load.items():
        lines.append(f"| {clients} | {r['requests']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} "
                     f"| {100 * r['requests_per_s'] / offline32:.0f}% | {r['failed']} |")
    int8, fp32 = results["ONNX int8"], results["ONNX fp32"]
    targets = {
        "int8 >= 2x PyTorch samples/s at batch 32": int8[32]["samples_per_s"] >= 2 * base[32]["samples_per_s"],
        "int8 accuracy within 0.5 points": abs(int8["accuracy"] - base["accuracy"]) <= 0.005,
        "ONNX fp32 probabilities within 1e-4": fp32["max_prob_diff_vs_pytorch"] <= 1e-4,
        "server at 32 clients >= 80% of offline batch 32": load[32]["requests_per_s"] >= 0.8 * offline32,
        "no failed request": all(r["failed"] == 0 for r in load.values()),
    }
    lines += ["", "targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items())]
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"offline": results, "serve": {served: load}, "targets": targets}, indent=2) + "\n")
    from record import record  # bench/, this script's own folder, is first on sys.path

    slug = {name: name.lower().replace(" ", "_") for name in results}
    record("serve", {
        **{f"{slug[name]}_batch{batch}_samples_per_s": r[batch]["samples_per_s"] for name, r in results.items() for batch in (1, 32)},
        **{f"{slug[name]}_accuracy": r["accuracy"] for name, r in results.items()},
        **{f"serve_{clients}_clients_requests_per_s": r["requests_per_s"] for clients, r in load.items()},
    })


if __name__ == "__main__":
    main()
