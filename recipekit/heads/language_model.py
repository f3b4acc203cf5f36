"""The pretraining heads, `masked_lm` (BERT's objective) and `causal_lm` (GPT's), on one unlabelled text column.

Their outputs are fine-tuning starting points: the output folder is a valid `model.name_or_path` for any
other head, which then gets a fresh head layer on the pretrained encoder. Tokenizer training, configs of
new models and packing live in recipekit/modeling.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from typing import ClassVar

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from datasets.fingerprint import Hasher
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
)

from ..core.errors import RecipeError
from ..data.streaming import SAMPLE_ROWS, is_streamed
from ..data.tokenizing import length_stats, tokenizer_identity
from ..modeling.models import pack, scratch_config, shape_problems
from .base import Head, load_kwargs, register

BLOCK_KEY = "model.head_options.block_size"
# Texts of a stream packed together: blocks never cross from one such group to the next, so each group may lose a
# partial block: fewer than block_size tokens per PACK_ROWS texts.
PACK_ROWS = 1000


@dataclass
class LMOptions:
    block_size: int = field(default=128, metadata={"help": "tokens per training example (packed block, or truncation when packing is off)"})
    packing: bool = field(default=True, metadata={"help": "concatenate texts and cut into block_size blocks; false: one padded example per text"})

    def problems(self) -> list[str]:
        return [f"block_size: {self.block_size} must be a positive number of tokens"] if self.block_size <= 0 else []


@dataclass
class MaskedLMOptions(LMOptions):
    mlm_probability: float = field(default=0.15, metadata={"help": "fraction of tokens chosen for prediction (BERT: 0.15; 80% become [MASK], 10% random, 10% kept)"})
    whole_word_mask: bool = field(default=False, metadata={"help": "choose whole words: every sub-token of a chosen word is masked"})

    def problems(self) -> list[str]:
        out = super().problems()
        if not 0.0 < self.mlm_probability < 1.0:
            out.append(f"mlm_probability: {self.mlm_probability} must be a fraction in (0, 1)")
        return out


class LanguageModel(Head):
    """Self-supervised heads on one unlabelled text column: the labels come from the text itself."""

    long_text = ("head",)  # its own tokenize: inputs and targets, words or blocks, not one cut text
    written_columns = ()  # encode keeps the text column; tokenize writes labels in place of every column

    needs_labels = False
    streams = True
    predictions_file = None  # a corpus has nothing to predict; test and validation report loss and perplexity
    pipeline_use = ""  # what the head's transformers pipeline does with the model, named when `predict` refuses
    metric_names = ("perplexity", "accuracy")
    default_metrics = ("perplexity", "accuracy")
    # Keep every column tokenize makes (offset_mapping feeds whole-word masking; Trainer would drop it).
    training_defaults: ClassVar[dict] = {"remove_unused_columns": False}
    auto_class: ClassVar[type] = AutoModelForMaskedLM
    masked: ClassVar[bool] = True  # labels are the masked tokens (False: every next token)

    @classmethod
    def recipe_problems(cls, options, recipe):
        out = []
        if len(recipe.data.text_columns) != 1:
            out.append(f"data.text_columns: {cls.name} reads one text column, got {recipe.data.text_columns}")
        if "max_length" in recipe.data_keys:
            out.append(f"data.max_length: {cls.name} cuts its corpus into blocks of {BLOCK_KEY} tokens "
                       f"(now {options.block_size}); set that instead")
        if recipe.model.head_config:
            out.append(f"model.head_config: a custom pooled head has no place on a {cls.name} model; leave it out")
        return out

    @property
    def text(self) -> str:
        return self.data.text_columns[0]

    def encode(self, splits, where):
        return DatasetDict({name: ds.select_columns([self.text]) for name, ds in splits.items()})

    def learn(self, train):
        if not is_streamed(train) and len(train) == 0:
            raise RecipeError(f"data: the training corpus is empty after preprocessing; nothing to pretrain on (column {self.text!r})")

    def encode_texts(self, tokenizer, texts: list[str]) -> dict:
        raise NotImplementedError

    def tokenize(self, splits, tokenizer):
        tokenizer = self.prepare_tokenizer(tokenizer)
        o = self.options
        out, stats = {}, {}
        for name, ds in splits.items():
            if is_streamed(ds):
                out[name], stats[name] = self.stream_blocks(ds, tokenizer)
                continue
            fingerprint = Hasher.hash([ds._fingerprint, tokenizer_identity(tokenizer), self.name, o.block_size, o.packing,
                                       getattr(o, "whole_word_mask", False), "lm"])
            ds = ds.map(lambda b: self.encode_texts(tokenizer, b[self.text]), batched=True, remove_columns=ds.column_names,
                        num_proc=self.data.num_proc, new_fingerprint=fingerprint, desc=f"tokenize {name}")
            lengths = np.asarray(pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy())
            stats[name] = length_stats(lengths, o.block_size)
            if o.packing:
                ds, counts = pack(ds, o.block_size, ds.column_names)
            else:
                ds = ds.map(lambda b: {k: [v[: o.block_size] for v in b[k]] for k in b}, batched=True, desc=f"truncate {name}")
                counts = {"tokens": int(np.minimum(lengths, o.block_size).sum()), "blocks": len(ds), "tokens_dropped": int(np.maximum(lengths - o.block_size, 0).sum())}
            stats[name].update(counts)
            if name == "train" and not len(ds):
                raise RecipeError(f"{BLOCK_KEY}: the training corpus has {counts['tokens']} tokens, fewer than one block of {o.block_size}")
            if not self.masked:
                ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True, desc=f"labels {name}")
            out[name] = ds
        # Texts over a block are split across blocks when packing, cut when not.
        return DatasetDict(out), {"block_size": o.block_size, "packing": o.packing, "splits": stats}

    def stream_blocks(self, ds, tokenizer):
        """A streamed corpus as blocks, made lazily as training reads it. The token-length report is measured on
        the stream's first SAMPLE_ROWS rows (the whole would mean reading the corpus twice), and says so."""
        sample = [row[self.text] for row in ds.take(SAMPLE_ROWS)]
        if not sample:
            raise RecipeError(f"data: the training corpus is empty after preprocessing; nothing to pretrain on (column {self.text!r})")
        lengths = np.asarray([len(ids) for ids in self.encode_texts(tokenizer, sample)["input_ids"]])
        stats = {**length_stats(lengths, self.options.block_size), "sample_rows": len(sample)}
        blocks = ds.map(self.blocks, batched=True, batch_size=PACK_ROWS, fn_kwargs={"tokenizer": tokenizer}, remove_columns=[self.text])
        return blocks, stats

    def blocks(self, batch, tokenizer):
        """One batch of texts as training examples: packed into full blocks (the batch's last partial block is
        dropped: fewer than block_size tokens per PACK_ROWS texts), or each text cut at block_size."""
        size = self.options.block_size
        enc = self.encode_texts(tokenizer, batch[self.text])
        if self.options.packing:
            total = sum(len(ids) for ids in enc["input_ids"]) // size * size
            joined = {k: list(chain.from_iterable(v)) for k, v in enc.items()}
            out = {k: [v[i:i + size] for i in range(0, total, size)] for k, v in joined.items()}
        else:
            out = {k: [row[:size] for row in v] for k, v in enc.items()}
        if not self.masked:
            out["labels"] = out["input_ids"]
        return out

    def prepare_tokenizer(self, tokenizer):
        # The masked objective pads with the tokenizer's own [PAD]; only a decoder's tokenizer needs EOS for it.
        return tokenizer if self.masked else super().prepare_tokenizer(tokenizer)

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        if model_args.init == "scratch":
            model = self.auto_class.from_config(scratch_config(model_args, tokenizer, self.options.block_size, BLOCK_KEY))
        else:
            model = self.auto_class.from_pretrained(model_args.path, **load_kwargs(model_args))
            problems = shape_problems(model.config, self.options.block_size, BLOCK_KEY, pretrained=True)
            if problems:
                raise RecipeError(problems)
        self.record(model)
        return model

    def load_trained(self, path, model_args):
        return self.auto_class.from_pretrained(path, **load_kwargs(model_args))

    def preprocess_logits(self):
        masked = self.masked

        def per_token(logits, labels):
            # Keep three numbers per position instead of vocabulary-sized logits: loss, hit, counted.
            if isinstance(logits, tuple):
                logits = logits[0]
            if not masked:
                logits, labels = logits[:, :-1], labels[:, 1:]
            counted = labels != -100
            nll = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none").view(labels.shape)
            hit = (logits.argmax(-1) == labels) & counted
            return torch.stack([nll, hit.float(), counted.float()], dim=-1)

        return per_token

    def compute_metrics(self, metric_names, tokenizer=None):
        def compute(prediction):
            p = np.asarray(prediction.predictions)
            counted = p[..., 2] == 1  # batches padded to one length by the Trainer carry -100 here
            loss = float(p[..., 0][counted].mean()) if counted.any() else float("nan")
            values = {"token_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": float(p[..., 1][counted].mean()) if counted.any() else None}
            return {k: v for k, v in values.items() if k in metric_names or k == "token_loss"}

        return compute

    def scores(self, metrics):
        if "perplexity" not in metrics and "loss" in metrics:
            metrics["perplexity"] = float(math.exp(min(metrics["loss"], 50.0)))
        return metrics

    def prediction_columns(self, predictions, split, tokenizer):
        return {}


@register("masked_lm")
class MaskedLM(LanguageModel):
    """BERT's objective: predict `mlm_probability` of the tokens from both sides; accuracy = masked tokens right."""
    aliases = ('mlm', 'masked_language_model', 'masked_language_modeling', 'bert_pretraining')

    Options = MaskedLMOptions
    pipeline_task = "fill-mask"
    pipeline_use = "fill masks"

    def encode_texts(self, tokenizer, texts):
        enc = tokenizer(texts, verbose=False, return_offsets_mapping=self.options.whole_word_mask, return_attention_mask=False)
        return dict(enc)

    def collator(self, tokenizer, model, pad_to_multiple_of):
        if tokenizer.mask_token is None:
            raise RecipeError("tokenizer: masked_lm needs a mask token; this tokenizer has none (set tokenizer.train.special_tokens.mask)")
        whole = self.options.whole_word_mask
        return DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=self.options.mlm_probability, whole_word_mask=whole,
            # Whole-word masking replaces every chosen token by [MASK]: transformers does not mix in random ones.
            mask_replace_prob=1.0 if whole else 0.8, random_replace_prob=0.0 if whole else 0.1,
            pad_to_multiple_of=pad_to_multiple_of,
        )


@register("causal_lm")
class CausalLM(LanguageModel):
    """GPT's objective: predict every next token (labels = inputs; the model shifts them by one)."""
    aliases = ('clm', 'lm', 'language_model', 'language_modeling', 'gpt', 'next_token')

    Options = LMOptions
    auto_class = AutoModelForCausalLM
    masked = False
    tokenizer_algorithm = "byte_level_bpe"
    tokenizer_template = False
    pipeline_task = "text-generation"
    pipeline_use = "continue texts"

    def encode_texts(self, tokenizer, texts):
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if end is None:
            raise RecipeError("tokenizer: causal_lm needs an end-of-text token between documents (eos); this tokenizer has none")
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [x + [end] for x in ids]}

    def collator(self, tokenizer, model, pad_to_multiple_of):
        # Pads input_ids with the pad id and labels with -100: padding never enters the loss, end-of-text does.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)
