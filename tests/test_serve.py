"""`run.py export` and `run.py serve` on tiny runs of every exportable head:

  export (ONNX fp32) -> `predict` on the export gives the run's own predictions (labels equal, probabilities to 1e-4)
  serve (a real uvicorn server on a loopback port, spoken to over HTTP) -> answers equal `run.py predict`, for a
        batch and for concurrent single-text clients, for the export and for the PyTorch run
  int8 export -> predict and serve agree; bad requests get a 4xx with a JSON error and the server lives on;
  heads that cannot be exported are refused in one line; SIGTERM finishes the request in flight, then exits.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_cli
from test_joins import CASES, COLUMNS, TIMING, predicted, predictions_file, trained_run

EXPORTABLE = ["sequence_classification", "binary", "multi_label", "regression", "pairs", "custom", "chunks_max", "setfit"]


def train(request, tmp_path_factory, case: str) -> Path:
    """test_joins.py's tiny run of `case` (the same recipe): trained once for the session."""
    return trained_run(request, tmp_path_factory, case).dir


def gold_file(run: Path) -> str:
    return str(run.parent / "data" / "test.csv")


@pytest.fixture(scope="module", params=EXPORTABLE)
def exported(request, tmp_path_factory) -> tuple[str, Path, Path]:
    run = train(request, tmp_path_factory, request.param)
    out = run.parent / "onnx"
    assert run_cli(["export", run, "--format", "onnx", "--output", out]) == 0
    return request.param, run, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(folder, **settings):
    """The app on a real uvicorn server in a thread, on a free loopback port."""
    import uvicorn

    from recipekit.commands.serve import Settings, create_app

    port = free_port()
    config = uvicorn.Config(create_app(Settings(str(folder), **settings)), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(60)


def call(port: int, method: str, path: str, body=None, raw: bytes | None = None, headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    status, text = response.status, response.read()
    conn.close()
    return status, json.loads(text) if text and response.getheader("content-type", "").startswith("application/json") else {}


def inputs_of(test: str, case: str) -> list:
    columns, _ = COLUMNS.get(CASES[case][2], (["text"], "label"))
    frame = pd.read_csv(test, dtype=str, keep_default_na=False)
    return [row[columns[0]] if len(columns) == 1 else [row[c] for c in columns] for _, row in frame.iterrows()]


def predict_file(folder, test: str, tmp_path: Path, batch_size: int = 32) -> list[dict]:
    """`run.py predict` as rows of {predicted, probabilities}, parsed exactly (floats round-trip)."""
    out = tmp_path / f"predicted-{Path(folder).name}.csv"
    assert run_cli(["predict", folder, "--input", test, "--output", out, "--batch-size", batch_size]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    rows = []
    for _, row in frame.iterrows():
        predicted = row["predicted"]
        item = {"predicted": predicted if isinstance(predicted, str) else float(predicted)}
        probs = {c.removeprefix("prob_"): float(row[c]) for c in frame.columns if c.startswith("prob_")}
        rows.append({**item, **({"probabilities": probs} if probs else {})})
    return rows


def close(got: list[dict], want: list[dict], tolerance: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w["predicted"], float):
            assert g["predicted"] == pytest.approx(w["predicted"], abs=tolerance)
        else:
            assert str(g["predicted"]) == w["predicted"]
        assert set(g.get("probabilities", {})) == set(w.get("probabilities", {}))
        for label, p in w.get("probabilities", {}).items():
            assert math.isclose(g["probabilities"][label], p, abs_tol=tolerance), (label, g, w)


@pytest.mark.slow  # a trained run and an ONNX export per head
def test_export_predicts_the_runs_own_predictions(exported, tmp_path):
    case, run, out = exported
    assert json.loads((out / "export.json").read_text())["head"] == json.loads((run / "head_state.json").read_text())["head"]
    assert (out / "head_state.json").read_text() == (run / "head_state.json").read_text()
    got = tmp_path / "onnx.csv"
    assert run_cli(["predict", out, "--input", gold_file(run), "--output", got]) == 0
    want, have = predicted(predictions_file(run)), predicted(got)
    assert set(want) == set(have)
    for column, values in want.items():
        if column == "predicted" and case != "regression":
            assert have[column] == values
        else:  # probabilities, and regression's values: ONNX fp32 within 1e-4 of PyTorch
            assert [float(v) for v in have[column]] == pytest.approx([float(v) for v in values], abs=1e-4)


def test_evaluate_on_the_export_gives_the_runs_test_metrics(exported, tmp_path):
    _, run, out = exported
    got = tmp_path / "evaluation.json"
    assert run_cli(["evaluate", out, "--input", gold_file(run), "--metrics", got]) == 0
    want = {k: v for k, v in json.loads((run / "metrics.json").read_text())["test"].items() if not k.endswith(TIMING)}
    evaluation = json.loads(got.read_text())
    assert set(evaluation["metrics"]) == set(want)
    for key, value in want.items():
        assert evaluation["metrics"][key] == pytest.approx(value, abs=1e-4), key


def test_server_answers_equal_predict_on_the_export(exported, tmp_path):
    case, run, out = exported
    test = gold_file(run)
    want = predict_file(out, test, tmp_path)
    texts = inputs_of(test, case)
    with serving(out) as port:
        status, body = call(port, "POST", "/predict", {"texts": texts})
        assert status == 200
        # One request of all rows is one forward pass, as predict's --batch-size 32 makes it: equal to the bit.
        close(body["predictions"], want, 0.0)
        with ThreadPoolExecutor(8) as pool:
            singles = list(pool.map(lambda t: call(port, "POST", "/predict", {"text": t}), texts))
    assert all(s == 200 for s, _ in singles)
    # Concurrent single texts meet other requests in a batch (other padding): equal up to float rounding.
    close([b["predictions"][0] for _, b in singles], want, 1e-5)


@pytest.fixture(scope="module")
def binary_run(request, tmp_path_factory) -> Path:
    return train(request, tmp_path_factory, "binary")


@pytest.fixture(scope="module")
def pytorch_server(binary_run):
    with serving(binary_run, max_batch=16, max_wait_ms=20) as port:
        yield port


def test_pytorch_server_answers_equal_predict_and_describes_the_run(binary_run, pytorch_server, tmp_path):
    test = gold_file(binary_run)
    want = predict_file(binary_run, test, tmp_path, batch_size=16)
    status, body = call(pytorch_server, "POST", "/predict", {"texts": inputs_of(test, "binary")})
    assert status == 200
    close(body["predictions"], want, 0.0)
    metrics = json.loads((binary_run / "metrics.json").read_text())
    assert body["decision_rule"] == metrics["decision_rule"]
    status, info = call(pytorch_server, "GET", "/info")
    state = json.loads((binary_run / "head_state.json").read_text())
    assert status == 200 and info["labels"] == state["labels"] and info["head"] == "binary" and info["format"] == "pytorch"
    assert info["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert call(pytorch_server, "GET", "/health")[1]["status"] == "ok"
    status, spec = call(pytorch_server, "GET", "/openapi.json")
    assert status == 200 and "/predict" in spec["paths"]
    conn = http.client.HTTPConnection("127.0.0.1", pytorch_server, timeout=30)
    conn.request("GET", "/docs")
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("body, status, error", [
    ({}, 422, "missing field"),
    ({"txt": "good film"}, 422, "txt"),
    ({"text": 5}, 422, "text"),
    ({"text": "   "}, 422, "empty text"),
    ({"texts": []}, 422, "empty"),
    ({"texts": ["good"] * 17}, 422, "at most 16"),
    ({"text": ["good", "film"]}, 422, "got 2 texts"),
    ({"text": "good", "texts": ["bad"]}, 422, "not both"),
])
def test_bad_requests_get_a_4xx_with_a_json_error(pytorch_server, body, status, error):
    got, answer = call(pytorch_server, "POST", "/predict", body)
    assert got == status and error in answer["error"]
    assert call(pytorch_server, "POST", "/predict", {"text": "a good film"})[0] == 200


def test_malformed_and_huge_bodies_are_refused(pytorch_server):
    status, answer = call(pytorch_server, "POST", "/predict", raw=b'{"text": ')
    assert status == 422 and "error" in answer
    huge = json.dumps({"text": "good " * 2_000_000}).encode()  # 10 MB
    status, answer = call(pytorch_server, "POST", "/predict", raw=huge)
    assert status == 413 and "over" in answer["error"]
    # A chunked body has no Content-Length: it is cut once it passes the limit.
    conn = http.client.HTTPConnection("127.0.0.1", pytorch_server, timeout=60)
    conn.request("POST", "/predict", body=iter([b'{"text": "', b"x" * (2 << 20), b'"}']),
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "over" in json.loads(response.read())["error"]
    assert call(pytorch_server, "GET", "/health")[0] == 200


def test_a_failing_batch_fails_its_requests_not_the_server(pytorch_server, monkeypatch):
    from recipekit.commands.serve import Model

    def broken(self, rows):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Model, "__call__", broken)
    status, answer = call(pytorch_server, "POST", "/predict", {"text": "a good film"})
    assert status == 500 and answer == {"error": "RuntimeError: out of memory"}
    monkeypatch.undo()
    assert call(pytorch_server, "POST", "/predict", {"text": "a good film"})[0] == 200


def test_concurrent_clients_are_batched_and_all_answered(binary_run, pytorch_server, tmp_path):
    texts = inputs_of(gold_file(binary_run), "binary")
    before = call(pytorch_server, "GET", "/health")[1]["batches"]
    status, batch = call(pytorch_server, "POST", "/predict", {"texts": texts})
    assert status == 200
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: call(pytorch_server, "POST", "/predict", {"text": texts[i % len(texts)]}), range(64)))
    assert [s for s, _ in answers] == [200] * 64
    close([b["predictions"][0] for _, b in answers], [batch["predictions"][i % len(texts)] for i in range(64)], 1e-5)
    batches = call(pytorch_server, "GET", "/health")[1]["batches"] - before
    assert batches < 65  # 65 requests, fewer forward passes: requests that arrived together were predicted together


@pytest.mark.slow  # an int8 export and a served model
def test_int8_export_predicts_and_serves(binary_run, tmp_path):
    out = tmp_path / "int8"
    assert run_cli(["export", binary_run, "--format", "onnx", "--quantize", "int8", "--output", out]) == 0
    assert json.loads((out / "export.json").read_text())["quantize"] == "int8"
    test = gold_file(binary_run)
    want = predict_file(out, test, tmp_path)
    run = predict_file(binary_run, test, tmp_path)
    # int8 weights move a tiny random model's probabilities by ~1e-3, not more.
    assert max(abs(w["probabilities"][k] - r["probabilities"][k]) for w, r in zip(want, run) for k in r["probabilities"]) < 0.02
    with serving(out) as port:
        status, body = call(port, "POST", "/predict", {"texts": inputs_of(test, "binary")})
        assert status == 200 and call(port, "GET", "/info")[1]["format"] == "onnx int8"
    close(body["predictions"], want, 0.0)


def test_export_refuses_heads_without_one_forward_pass(request, tmp_path_factory, capsys):
    run = train(request, tmp_path_factory, "token_classification")
    assert run_cli(["export", run, "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token_classification" in err[0] and "per word" in err[0]
    assert not Path(f"{run}-onnx").exists()


def test_export_and_serve_say_how_to_install_a_missing_extra(binary_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert run_cli(["serve", binary_run]) == 2
    assert run_cli(["export", binary_run, "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: serve: needs fastapi, which is not installed; pip install 'recipekit[serve]'",
        "error: export: needs onnxscript, which is not installed; pip install 'recipekit[serve]'",
    ]


@pytest.mark.slow  # a server process
def test_sigterm_finishes_the_request_in_flight_then_exits(binary_run, tmp_path):
    out = binary_run
    # A long batching wait keeps the request in flight when SIGTERM comes. --port 0: the first line says which port.
    server = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", str(out), "--port", "0", "--max-wait-ms", "1500"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        first = server.stdout.readline().decode()
        port = int(first.split(" (docs")[0].rsplit(":", 1)[1])
        assert first.startswith(f"serving {out} on http://127.0.0.1:{port} ") and port > 0, first
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode() if server.poll() is not None else "no start"
            try:
                if call(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call, port, "POST", "/predict", {"text": "a good film"})
            time.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            status, body = pending.result(timeout=60)
        assert status == 200 and body["predictions"][0]["predicted"] in json.loads((out / "head_state.json").read_text())["labels"]
        # uvicorn drains, then ends the process by the signal it caught (newer versions) or returns (older ones).
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(OSError):
            call(port, "GET", "/health")
        assert list(tmp_path.iterdir()) == []  # the model's temporary folder is gone with it
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.slow
def test_workers_serve_quietly_and_stop_cleanly(tmp_path):
    # Two processes on one socket: each loads its own model (long on a busy machine: past uvicorn's 5 s health check).
    run = ROOT / "tests" / "fixtures" / "run_v1" / "binary"
    server = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", str(run), "--port", "0", "--workers", "2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        first = server.stdout.readline().decode()
        port = int(first.split(" (docs")[0].rsplit(":", 1)[1])
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "no start"
            try:
                if call(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        status, body = call(port, "POST", "/predict", {"text": "a good film"})
        assert status == 200 and body["predictions"][0]["predicted"] in ("negative", "positive")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) in (0, -signal.SIGTERM)
        rest = server.stdout.read().decode()
        # No bar or load report per worker, no leaked semaphore at shutdown, no temporary folder left.
        assert rest == "", rest
        assert list(tmp_path.iterdir()) == []
    finally:
        if server.poll() is None:
            server.kill()
