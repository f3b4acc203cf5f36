"""Heads that write text: `seq2seq` (encoder-decoder, e.g. summarisation) and `causal_lm_sft` (prompt -> completion)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from ..evaluation import metrics as M
from ..modeling.models import scratch_config
from .base import (
    Head,
    Prediction,
    column_values,
    first_bad,
    load_kwargs,
    map_splits,
    pad_like_tokenizer,
    pick,
    register,
)
from .classification import LENGTH_KEY


def text_targets(splits, column, where, kind: str):
    for split, ds in splits.items():
        if column in ds.column_names:
            first_bad(ds, column, lambda v: not isinstance(v, str) or not v.strip(), where, split, f"{kind} must be non-empty text, got")
    return splits


def text_problems(data_args, what: str) -> list[str]:
    if len(data_args.text_columns) != 1:
        return [f"data.text_columns: {what} reads one input column, got {data_args.text_columns}"]
    return []


def generate(model, tokenizer, prompts: list[str], batch_size: int, prompt_max_length: int | None = None,
             decoder_only: bool = False, **generation) -> list[str]:
    """Greedy (or beam) generation, batch by batch, for prediction files. Prompts longer than
    prompt_max_length tokens are cut as in training (a decoder-only model keeps the prompt's end, next to
    its answer); `generation` goes to model.generate (max_new_tokens, max_length, num_beams)."""
    model.eval()
    out = []
    side, cut = tokenizer.padding_side, tokenizer.truncation_side
    # A decoder-only model continues the last position: pad on the left so every prompt ends there.
    tokenizer.padding_side = tokenizer.truncation_side = "left" if decoder_only else side
    try:
        for start in range(0, len(prompts), batch_size):
            # No token_type_ids: a BERT tokenizer makes them, and T5's or GPT-2's generate refuses or misreads them.
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True, truncation=prompt_max_length is not None,
                              max_length=prompt_max_length, add_special_tokens=not decoder_only, return_token_type_ids=False).to(model.device)
            with torch.no_grad():
                ids = model.generate(**batch, do_sample=False, pad_token_id=tokenizer.pad_token_id, **generation)
            if decoder_only:
                ids = ids[:, batch["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, cut
    return out


def generation_settings(args) -> dict:
    """What Seq2SeqTrainer's predict_with_generate uses: generation_max_length (decoder tokens, as generate's
    max_length) and generation_num_beams; unset, the model's generation_config decides."""
    names = {"generation_max_length": "max_length", "generation_num_beams": "num_beams"}
    return {to: getattr(args, name, None) for name, to in names.items() if getattr(args, name, None)}


@dataclass
class Seq2SeqOptions:
    source_prefix: str = field(default="", metadata={"help": "text put before every source, e.g. 'summarize: ' for T5"})
    max_target_length: int = field(default=128, metadata={"help": "target tokens after truncation"})

    def problems(self) -> list[str]:
        return [f"max_target_length: {self.max_target_length} must be positive"] if self.max_target_length <= 0 else []


@register("seq2seq")
class Seq2Seq(Head):
    """Encoder-decoder generation (T5, BART): text_columns = [source], label_column = target text.

    Trained with Seq2SeqTrainer; `training.predict_with_generate` (on by default for this head) makes
    evaluation generate, with `training.generation_max_length` / `generation_num_beams`, and score ROUGE.
    """
    aliases = ('summarization', 'summarisation', 'translation', 'text2text', 'text_to_text', 'encoder_decoder')

    long_text = ("head",)  # its own tokenize: inputs and targets, words or blocks, not one cut text
    written_columns = ()  # the target stays text until tokenize, which writes labels in place of every column

    pipeline_task = "text2text-generation"
    training_args_class = Seq2SeqTrainingArguments
    trainer_base = Seq2SeqTrainer
    predictions_file = "predictions.jsonl"
    not_exportable = "it generates text token by token (a decoding loop around the model), not one forward pass"
    Options = Seq2SeqOptions
    metric_names = tuple(M.GENERATION)
    default_metrics = tuple(M.GENERATION)
    training_defaults: ClassVar[dict] = {"predict_with_generate": True}

    @classmethod
    def recipe_problems(cls, options, recipe):
        return text_problems(recipe.data, "seq2seq")

    @property
    def source(self) -> str:
        return self.data.text_columns[0]

    @property
    def target(self) -> str:
        return self.data.label_column

    def encode(self, splits, where):
        return text_targets(splits, self.target, where, "the target")

    def encode_split(self, ds):
        return text_targets({"input": ds}, self.target, lambda split, row: f"row {row}", "the target")["input"]

    def tokenize(self, splits, tokenizer):
        tokenizer = self.prepare_tokenizer(tokenizer)
        prefix = self.options.source_prefix

        def encode(batch):
            enc = tokenizer([prefix + t for t in batch[self.source]], truncation=True, max_length=self.data.max_length)
            if self.target in batch:
                enc["labels"] = tokenizer(
                    text_target=batch[self.target], truncation=True, max_length=self.options.max_target_length
                )["input_ids"]
            return enc

        return map_splits(splits, encode, self.data.max_length)

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        if model_args.init == "scratch":
            model = AutoModelForSeq2SeqLM.from_config(scratch_config(model_args, tokenizer, self.data.max_length, LENGTH_KEY))
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(model_args.path, **load_kwargs(model_args))
        self.record(model)
        return model

    def load_trained(self, path, model_args):
        return AutoModelForSeq2SeqLM.from_pretrained(path, **load_kwargs(model_args))

    def collator(self, tokenizer, model, pad_to_multiple_of):
        collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)

        def sources_alone_or_with_targets(features):
            batch = collate(features)
            # New texts have no target: the collator still sets labels=None, which Seq2SeqTrainer reads as
            # "has labels" and runs a forward pass without decoder inputs.
            if batch.get("labels") is None:
                batch.pop("labels", None)
            return batch

        return sources_alone_or_with_targets

    @staticmethod
    def decode(ids, tokenizer) -> list[str]:
        ids = np.where(np.asarray(ids) < 0, tokenizer.pad_token_id, ids)
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, metric_names, tokenizer):
        def compute(prediction):
            predictions = prediction.predictions
            if isinstance(predictions, tuple) or np.asarray(predictions).ndim == 3:
                return {}  # logits, not generated ids: predict_with_generate is off; the loss is the score
            return pick(metric_names, M.rouge_scores(self.decode(prediction.label_ids, tokenizer), self.decode(predictions, tokenizer)))

        return compute

    def gold(self, split):
        return {self.target: column_values(split, self.target)} if self.target in split.column_names else {}

    def predict(self, trainer, tokenized, split, prefix="test"):
        output = trainer.predict(tokenized, metric_key_prefix=prefix)
        tokenizer = trainer.processing_class
        if np.asarray(output.predictions).ndim == 3:  # predict_with_generate off: the logits are no text; generate here
            prompts = [self.options.source_prefix + (t or "") for t in column_values(split, self.source)]
            texts = generate(trainer.model, tokenizer, prompts, trainer.args.per_device_eval_batch_size, self.data.max_length,
                             **generation_settings(trainer.args))
            return Prediction(output, {"generated": texts})
        return Prediction(output, {"generated": self.decode(output.predictions, tokenizer)})

    def decision_rule(self):
        return "generated by the model (training.generation_num_beams beams; greedy when unset)"


@dataclass
class CompletionOptions:
    max_new_tokens: int = field(default=64, metadata={"help": "tokens generated per test prompt for predictions.jsonl"})

    def problems(self) -> list[str]:
        return [f"max_new_tokens: {self.max_new_tokens} must be positive"] if self.max_new_tokens <= 0 else []


@register("causal_lm_sft")
class CausalLMCompletion(Head):
    """Decoder-only prompt -> completion fine-tuning: text_columns = [prompt], label_column = completion.

    The model reads prompt + completion + end-of-text; only completion and end-of-text tokens are in the
    loss (the prompt's labels are -100), so it learns to answer, not to repeat prompts. `causal_lm` is
    left to plain language-model pretraining on raw text.
    """
    aliases = ('sft', 'instruction_tuning', 'completion', 'chat', 'fine_tune_lm')

    long_text = ("head",)  # its own tokenize: inputs and targets, words or blocks, not one cut text
    written_columns = ()  # the target stays text until tokenize, which writes labels in place of every column

    pipeline_task = "text-generation"
    predictions_file = "predictions.jsonl"
    not_exportable = "it generates text token by token (a decoding loop around the model), not one forward pass"
    Options = CompletionOptions
    metric_names = ("perplexity",)
    default_metrics = ("perplexity",)
    tokenizer_algorithm = "byte_level_bpe"
    tokenizer_template = False

    @classmethod
    def recipe_problems(cls, options, recipe):
        return text_problems(recipe.data, "causal_lm_sft")

    @property
    def prompt(self) -> str:
        return self.data.text_columns[0]

    @property
    def completion(self) -> str:
        return self.data.label_column

    def encode(self, splits, where):
        return text_targets(splits, self.completion, where, "the completion")

    def encode_split(self, ds):
        return text_targets({"input": ds}, self.completion, lambda split, row: f"row {row}", "the completion")["input"]

    def tokenize(self, splits, tokenizer):
        tokenizer = self.prepare_tokenizer(tokenizer)
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        limit = self.data.max_length

        def encode(batch):
            prompts = tokenizer(batch[self.prompt], add_special_tokens=False)["input_ids"]
            if self.completion not in batch:  # a test split of prompts only: generation needs no labels
                ids = [p[-limit:] for p in prompts]
                return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
            answers = tokenizer(batch[self.completion], add_special_tokens=False)["input_ids"]
            ids, labels = [], []
            for p, c in zip(prompts, answers):
                c = (c + [end])[: max(limit // 2, limit - len(p))]
                p = p[-(limit - len(c)):] if limit > len(c) else []  # keep the end of a long prompt, next to its answer
                ids.append(p + c)
                labels.append([-100] * len(p) + c)
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}

        return map_splits(splits, encode, limit)

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        if model_args.init == "scratch":
            model = AutoModelForCausalLM.from_config(scratch_config(model_args, tokenizer, self.data.max_length, LENGTH_KEY))
        else:
            model = AutoModelForCausalLM.from_pretrained(model_args.path, **load_kwargs(model_args))
        pad_like_tokenizer(model, tokenizer)
        self.record(model)
        return model

    def load_trained(self, path, model_args):
        return AutoModelForCausalLM.from_pretrained(path, **load_kwargs(model_args))

    def collator(self, tokenizer, model, pad_to_multiple_of):
        # Pads input_ids with the pad id and labels with -100, which is all a decoder-only batch needs.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)

    def scores(self, metrics):
        if "loss" in metrics:
            metrics["perplexity"] = float(math.exp(min(metrics["loss"], 50.0)))
        return metrics

    def gold(self, split):
        return {self.completion: column_values(split, self.completion)} if self.completion in split.column_names else {}

    def predict(self, trainer, tokenized, split, prefix="test"):
        # The loss (and perplexity) needs completions; the generated text needs only the prompts.
        output = trainer.predict(tokenized, metric_key_prefix=prefix) if "labels" in tokenized.column_names else None
        prompts = [t or "" for t in column_values(split, self.prompt)]
        texts = generate(trainer.model, trainer.processing_class, prompts, trainer.args.per_device_eval_batch_size,
                         self.data.max_length, decoder_only=True, max_new_tokens=self.options.max_new_tokens)
        return Prediction(output, {"generated": texts})

    def decision_rule(self):
        return f"greedy decoding of up to {self.options.max_new_tokens} new tokens after the prompt"
