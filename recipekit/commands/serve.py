"""`run.py serve RUN`: a finished run (or its ONNX export) behind HTTP, FastAPI on uvicorn.

  POST /predict  {"text": "..."} | {"text": ["premise", "hypothesis"]} | {"texts": [...]}  -> labels, probabilities
  GET  /health   GET /info   GET /docs (OpenAPI)

Each answer comes from the run's one prediction path (inference.Predictor: the run's cleaning steps, tokenization,
collator and the head's decision rule), so it is what `run.py predict` writes for the same text. Requests that
arrive together are predicted together: a batch goes when it holds --max-batch texts or its first request has
waited --max-wait-ms. One batch runs at a time, in a worker thread, so the event loop keeps accepting (and
refusing) requests meanwhile. SIGTERM or Ctrl-C: uvicorn stops accepting, finishes the requests in flight, exits.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations, and the request model is local.
import asyncio
import errno
import inspect
import json
import os
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset
from tqdm.std import TqdmDefaultWriteLock

from ..core import console
from ..core.errors import RecipeError
from ..inference.onnxmodel import EXPORT_FILE, require
from ..inference.predictor import Predictor
from ..inference.runs import TrainedRun, model_input, open_run
from ..outputs.folder import FINISHED_MARKER
from .cli import MAX_BATCH, MAX_WAIT_MS

MAX_BODY_BYTES = 1 << 20  # 1 MiB: 32 texts of 30,000 characters; anything larger is a mistake or an attack
DRAIN_SECONDS = 30  # after SIGTERM, requests still in flight this long are cut
WORKER_START_SECONDS = 120
SETTINGS_ENV = "RECIPEKIT_SERVE"  # how `--workers N` hands the settings to each worker process


@dataclass
class Settings:
    run: str
    max_batch: int = MAX_BATCH
    max_wait_ms: float = MAX_WAIT_MS


def serve_command(args) -> int:
    require("fastapi", "serve")
    uvicorn = require("uvicorn", "serve")
    from uvicorn.supervisors import Multiprocess

    settings = Settings(args.run, args.max_batch, args.max_wait_ms)
    open_run(args.run)  # a folder that is no run is refused here, in one line, before any port is taken
    # The port is taken before the model loads (seconds): a port in use is refused at once, and --port 0's pick is known.
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {args.run} on http://{shown}:{port} (docs: /docs); SIGTERM or Ctrl-C to stop", flush=True)
    common = {"host": args.host, "port": port, "timeout_graceful_shutdown": DRAIN_SECONDS, "log_level": "warning"}
    try:
        if args.workers == 1:
            server = uvicorn.Server(uvicorn.Config(create_app(settings), **common))
            server.run(sockets=[sock])
            if not server.started:
                return 3  # uvicorn has logged why (the app failed to start)
        else:
            # Several processes need an import string; each builds its app (and loads the model) from the environment.
            os.environ[SETTINGS_ENV] = json.dumps(settings.__dict__)
            # A worker answers uvicorn's health pings once its imports are done: seconds on a busy machine, more than
            # uvicorn's 5, after which it kills and restarts the worker, forever. (Older uvicorn neither pings nor takes this.)
            if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
                common["timeout_worker_healthcheck"] = WORKER_START_SECONDS
            config = uvicorn.Config("recipekit.commands.serve:app_from_environment", factory=True, workers=args.workers, **common)
            older = {"target": uvicorn.Server(config).run} if "target" in inspect.signature(Multiprocess).parameters else {}
            Multiprocess(config, sockets=[sock], **older).run()
    finally:
        sock.close()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound as uvicorn binds its own; a port in use or an address not of this machine is a RecipeError."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except (socket.gaierror, UnicodeError) as e:
        raise RecipeError(f"serve --host: {host!r} is not an address of this machine ({e})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise RecipeError(f"serve --port: {port} is in use on {host}; choose another, or --port 0 for any free port") from None
        if e.errno == errno.EACCES:
            raise RecipeError(f"serve --port: {port} needs administrator rights on {host} (below 1024); choose 1024 or above") from None
        raise RecipeError(f"serve --host {host} --port {port}: cannot listen there: {e.strerror}") from None
    sock.set_inheritable(True)  # the --workers processes accept on it
    return sock


def app_from_environment():
    console.configure(False)  # each worker is a fresh process: quiet, as the parent is
    # tqdm's first bar (datasets' disabled ones, at the first request) makes a multiprocessing lock: in a spawned worker
    # a named semaphore, which uvicorn's re-raised SIGTERM leaves behind ("1 leaked semaphore" at shutdown). No bar is
    # shown here, so its thread lock is enough.
    TqdmDefaultWriteLock.mp_lock = None
    return create_app(Settings(**json.loads(os.environ[SETTINGS_ENV])))


@dataclass
class Job:
    rows: list[tuple[str, ...]]
    done: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers the texts of concurrent requests into batches of at most `max_batch`, predicted one at a time."""

    def __init__(self, predict, max_batch: int, max_wait_s: float):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.carried: Job | None = None  # the job that did not fit in the last batch: first in the next one
        self.batches = 0

    async def submit(self, rows: list[tuple[str, ...]]) -> list[dict]:
        job = Job(rows, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.done

    async def next_batch(self) -> list[Job]:
        first = self.carried or await self.queue.get()
        self.carried = None
        batch, size = [first], len(first.rows)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if size + len(job.rows) > self.max_batch:
                self.carried = job
                break
            batch.append(job)
            size += len(job.rows)
        return batch

    async def run(self) -> None:
        while True:
            batch = await self.next_batch()
            rows = [row for job in batch for row in job.rows]
            try:
                answers = await asyncio.to_thread(self.predict, rows)
            except Exception as e:  # noqa: BLE001 - whatever one batch raises is its requests' error, never the server's end
                for job in batch:
                    if not job.done.done():
                        job.done.set_exception(e)
                continue
            self.batches += 1
            start = 0
            for job in batch:
                if not job.done.done():  # a client that went away leaves a cancelled future
                    job.done.set_result(answers[start:start + len(job.rows)])
                start += len(job.rows)


class Model:
    """The run loaded once: turns rows of texts into the head's prediction columns, one dict per row."""

    def __init__(self, run: TrainedRun, batch_size: int):
        self.run = run
        self.predictor = Predictor(run, batch_size).__enter__()
        self.columns = run.data.text_columns

    def close(self) -> None:
        self.predictor.__exit__(None, None, None)

    def __call__(self, rows: list[tuple[str, ...]]) -> list[dict]:
        ds = Dataset.from_dict({c: [row[i] for row in rows] for i, c in enumerate(self.columns)})
        view = model_input(self.run, ds, self.columns)
        columns = self.predictor.predict(view).columns
        return [answer({name: values[i] for name, values in columns.items()}) for i in range(len(rows))]


def answer(row: dict) -> dict:
    """One row's prediction columns as JSON: `predicted` (the run's decision), the probabilities by label, and
    anything else the head writes, under the names `run.py predict` gives them."""
    out = {"predicted": row.pop("predicted")}
    probs = {name.removeprefix("prob_"): float(value) for name, value in row.items() if name.startswith("prob_")}
    if probs:
        out["probabilities"] = probs
    out.update({k: v for k, v in row.items() if not k.startswith("prob_")})
    return out


def run_info(run: TrainedRun) -> dict:
    """What /info says: the run's labels, model, head, decision rule and the metrics it reached."""
    from ..recipe.build import read_yaml

    metrics = json.loads((run.folder / FINISHED_MARKER).read_text(encoding="utf-8"))
    timing = ("runtime", "per_second", "preparation_time")
    scores = {split: {k: v for k, v in metrics[split].items() if not k.endswith(timing)}
              for split in ("validation", "test") if isinstance(metrics.get(split), dict)}
    exported = json.loads((run.folder / EXPORT_FILE).read_text()) if run.exported else None
    model = (read_yaml(str(run.folder / "recipe.yaml")).get("model") or {}).get("name_or_path")
    return {
        "run": str(run.folder), "model": model, "head": run.head.name, "labels": run.labels,
        "text_columns": run.data.text_columns, "decision_rule": run.head.decision_rule(),
        "format": f"onnx {exported.get('quantize') or 'fp32'}" if exported else "pytorch", "metrics": scores,
    }


def rows_of(body, columns: list[str], max_batch: int) -> list[tuple[str, ...]]:
    """The request's texts as rows of the run's text columns; a RecipeError (422) says what is wrong."""
    if body.text is not None and body.texts is not None:
        raise RecipeError("give either 'text' (one input) or 'texts' (a batch), not both")
    if body.text is None and body.texts is None:
        raise RecipeError("missing field: 'text' (one input) or 'texts' (a batch)")
    inputs = [body.text] if body.text is not None else body.texts
    if not inputs:
        raise RecipeError("'texts' is empty")
    if len(inputs) > max_batch:
        raise RecipeError(f"'texts' holds {len(inputs)} inputs; at most {max_batch} per request")
    rows = []
    for i, value in enumerate(inputs):
        where = "'text'" if body.text is not None else f"'texts'[{i}]"
        if isinstance(value, str):
            value = [value]
        elif isinstance(value, dict):
            missing = [c for c in columns if c not in value]
            if missing or len(value) != len(columns):
                raise RecipeError(f"{where}: keys {sorted(value)}; this run reads {columns}")
            value = [value[c] for c in columns]
        if len(value) != len(columns):
            shape = "a string" if len(columns) == 1 else f"a list of {len(columns)} strings ({', '.join(columns)})"
            raise RecipeError(f"{where}: this run reads {shape}, got {len(value)} texts")
        if any(not v.strip() for v in value):
            raise RecipeError(f"{where}: empty text")
        rows.append(tuple(value))
    return rows


class LimitBody:
    """Refuse a body over `limit` bytes with 413: by its Content-Length before reading it, or, for a chunked body,
    as soon as the bytes read pass the limit (FastAPI passes the HTTPException raised while reading to its handler)."""

    def __init__(self, app, limit: int, error):
        self.app, self.limit, self.error = app, limit, error

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            body = json.dumps({"error": f"request body over {self.limit} bytes"}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self.error(status_code=413, detail=f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


def create_app(settings: Settings):
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    Input = StrictStr | list[StrictStr] | dict[str, StrictStr]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Input | None = Field(None, description="one input: a text, or a list (or object) of one text per text column (pairs)")
        texts: list[Input] | None = Field(None, description=f"a batch of inputs, at most --max-batch ({settings.max_batch})")

    run = open_run(settings.run)
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app):
        state["model"] = Model(run, settings.max_batch)
        try:
            state["batcher"] = Batcher(state["model"], settings.max_batch, settings.max_wait_ms / 1000)
            task = asyncio.create_task(state["batcher"].run())
            yield
            # uvicorn has answered every request in flight by now (graceful shutdown); the batcher is idle.
            task.cancel()
        finally:
            state["model"].close()  # its temporary folder goes on every way out

    info = run_info(run)
    app = FastAPI(title=f"recipekit: {Path(settings.run).name}", lifespan=lifespan,
                  description=f"{info['head']} on {info['model']}; decision rule: {info['decision_rule']}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse(status_code=422, content={"error": f"{where}: {first.get('msg', 'invalid request')}",
                                                      "detail": json.loads(json.dumps(exc.errors(), default=str))})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)})

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        # A batch that fails fails its own requests, in JSON like every other error; the server goes on.
        return JSONResponse(status_code=500, content={"error": f"{type(exc).__name__}: {exc}"})

    app.add_middleware(LimitBody, limit=MAX_BODY_BYTES, error=HTTPException)

    @app.post("/predict", summary="Predict one input or a batch", response_description="the run's prediction per input")
    async def predict(body: PredictRequest):
        try:
            rows = rows_of(body, run.data.text_columns, settings.max_batch)
        except RecipeError as e:
            raise HTTPException(status_code=422, detail=e.problems[0]) from None
        try:
            predictions = await state["batcher"].submit(rows)
        except RecipeError as e:
            raise HTTPException(status_code=422, detail=e.problems[0]) from None
        return {"predictions": predictions, "decision_rule": info["decision_rule"]}

    @app.get("/health", summary="Liveness: the model is loaded and the batcher is running")
    async def health():
        return {"status": "ok", "batches": state["batcher"].batches}

    @app.get("/info", summary="The run: labels, model, head, decision rule and metrics")
    async def get_info():
        return {**info, "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms}

    return app
