"""Language-model pretraining: the `masked_lm` and `causal_lm` heads, tokenizer training, models built
from scratch, and packing.

A pretraining recipe reads one unlabelled text column. `model.init: scratch` builds a fresh model from a
config family (`model.family: bert`) or from another model's config (`name_or_path`), with
`model.config` overrides; `tokenizer.train` trains a new tokenizer on the training split (after the
`preprocess:` steps), which is saved with the model. The output folder is then a valid `name_or_path`
for any fine-tuning recipe.

Packing (`head_options.packing: true`, the default) concatenates every text, each closed by its special
tokens, and cuts the stream into blocks of exactly `block_size` tokens: no padding, every position
trains, and documents longer than a block are kept whole across blocks. Only the stream's last partial
block (under `block_size` tokens) is dropped. Without packing each text is truncated to `block_size` and
padded per batch: no text is cut mid-way into another's context, but long texts lose their tail and short
ones waste compute on padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from datasets.fingerprint import Hasher
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerFast,
)

from .errors import RecipeError
from .heads import Head, load_kwargs, pad_with_eos, register
from .schema import Problem, coerce, did_you_mean, not_one_of, show

INITS = ["pretrained", "scratch"]
# Families tested here; any other `transformers` config name (CONFIG_MAPPING) works the same way.
FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "llama"]
ALGORITHMS = ["wordpiece", "byte_level_bpe"]
ROLES = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
SPECIAL_TOKENS = {
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "byte_level_bpe": {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"},
}
BYTES = 256  # byte-level BPE starts from all 256 bytes, so no text is ever out of vocabulary
# RoBERTa-style models number positions from padding_idx + 1 = 2: two of their positions are never used.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


@dataclass
class TrainTokenizerArgs:
    algorithm: str | None = field(
        default=None,
        metadata={"help": "wordpiece (BERT-style) or byte_level_bpe (GPT-2/RoBERTa-style); default: wordpiece for masked_lm, byte_level_bpe for causal_lm",
                  "choices": ALGORITHMS},
    )
    vocab_size: int = field(default=8000, metadata={"help": "tokens in the vocabulary, special tokens included"})
    min_frequency: int = field(default=2, metadata={"help": "a merge must occur this often in the corpus to enter the vocabulary"})
    lowercase: bool = field(default=False, metadata={"help": "lower-case text before tokenizing (and at every later use)"})
    special_tokens: dict = field(
        default_factory=dict,
        metadata={"help": f"role -> token, roles {', '.join(ROLES)}; empty: [PAD] [UNK] [CLS] [SEP] [MASK] for wordpiece, <s> <pad> </s> <unk> <mask> for BPE"},
    )
    max_texts: int | None = field(default=None, metadata={"help": "train on the first N training texts only (null: all)"})

    def specials(self, algorithm: str) -> dict[str, str]:
        return dict(self.special_tokens) or dict(SPECIAL_TOKENS[algorithm])

    def problems(self, algorithm: str) -> list[str]:
        out = []
        for role, token in self.special_tokens.items():
            if role not in ROLES:
                out.append(f"special_tokens: {not_one_of(role, ROLES, 'a special-token role')}")
            elif not isinstance(token, str) or not token:
                out.append(f"special_tokens.{role}: expected a non-empty string, got {show(token)}")
        specials = set(self.specials(algorithm).values())
        floor = len(specials) + (BYTES if algorithm == "byte_level_bpe" else 0)
        if self.vocab_size <= floor:
            what = f"{len(specials)} special tokens" + (f" and the {BYTES} byte tokens" if algorithm == "byte_level_bpe" else "")
            out.append(f"vocab_size: {self.vocab_size} leaves no room for learned tokens beside the {what}; give more than {floor}")
        if self.min_frequency < 1:
            out.append(f"min_frequency: {self.min_frequency} must be 1 or more")
        if self.max_texts is not None and self.max_texts <= 0:
            out.append(f"max_texts: {self.max_texts} must be positive (or null for all)")
        return out


@dataclass
class TokenizerArgs:
    """The `tokenizer:` section: reuse a tokenizer (the model's by default), or train one on the data."""

    name_or_path: str | None = field(
        default=None, metadata={"help": "tokenizer to load (Hub id, folder, package:...); default: model.name_or_path"}
    )
    train: TrainTokenizerArgs | None = field(
        default=None, metadata={"help": "train a new tokenizer on the training split: algorithm, vocab_size, min_frequency, lowercase, special_tokens"}
    )


def build_tokenizer_args(raw, errors: list[str], algorithm_default: str) -> TokenizerArgs:
    from .schema import build_kwargs

    kwargs = build_kwargs(TokenizerArgs, raw, "tokenizer", errors)
    train = kwargs.pop("train", None)
    args = TokenizerArgs(**kwargs)
    if train is not None:
        args.train = TrainTokenizerArgs(**build_kwargs(TrainTokenizerArgs, train, "tokenizer.train", errors))
        args.train.algorithm = args.train.algorithm or algorithm_default
        errors += [f"tokenizer.train.{p}" for p in args.train.problems(args.train.algorithm)]
        if args.name_or_path:
            errors.append("tokenizer: give name_or_path (reuse a tokenizer) or train (a new one), not both")
    return args


def train_tokenizer(args: TrainTokenizerArgs, train: Dataset, text_column: str, masked: bool) -> PreTrainedTokenizerFast:
    """A new tokenizer learned from the training texts, wrapped for transformers (save_pretrained, AutoTokenizer)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = args.specials(args.algorithm)
    unique = list(dict.fromkeys(specials.values()))
    if args.algorithm == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=specials.get("unk", "[UNK]")))
        tok.normalizer = normalizers.BertNormalizer(lowercase=args.lowercase, strip_accents=args.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency, special_tokens=unique)
    else:
        tok = Tokenizer(models.BPE())
        if args.lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=args.vocab_size, min_frequency=args.min_frequency, special_tokens=unique,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    texts = train.with_format("arrow")[text_column]
    if args.max_texts is not None:
        texts = texts[: args.max_texts]
    n = len(texts)
    batches = (texts[i:i + 1000].to_pylist() for i in range(0, n, 1000))
    tok.train_from_iterator(batches, trainer, length=n)

    steps = []
    if args.algorithm == "byte_level_bpe":
        steps.append(processors.ByteLevel(trim_offsets=True))  # offsets without the leading space: word starts for whole-word masking
    first, last = specials.get("cls", specials.get("bos")), specials.get("sep", specials.get("eos"))
    if masked and first and last:
        ids = [(t, tok.token_to_id(t)) for t in dict.fromkeys([first, last])]
        steps.append(processors.TemplateProcessing(single=f"{first} $A {last}", pair=f"{first} $A {last} $B:1 {last}:1", special_tokens=ids))
    if steps:
        tok.post_processor = steps[0] if len(steps) == 1 else processors.Sequence(steps)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{f"{role}_token": t for role, t in specials.items()})


def family_config(family: str):
    return CONFIG_MAPPING[family]()


def config_problems(model_args) -> list[str]:
    """model.init / family / config: checked against the config class itself, each key with its type."""
    out = []
    if model_args.init == "pretrained":
        if model_args.family:
            out.append("family: only with init: scratch (a pretrained model brings its own config)")
        if model_args.config:
            out.append("config: overrides only apply with init: scratch (a pretrained model keeps its trained shape)")
        return out
    if model_args.family and model_args.name_or_path:
        out.append("family / name_or_path: with init: scratch give one: a config family, or a model whose config to copy")
    if not model_args.family and not model_args.name_or_path:
        out.append(f"family: init: scratch needs a config family ({', '.join(FAMILIES)}, ...) or name_or_path to copy a config from")
    if model_args.family and model_args.family not in CONFIG_MAPPING:
        out.append(f"family: {show(model_args.family)} is not a transformers config family{did_you_mean(model_args.family, list(CONFIG_MAPPING)) or '.'} Tested: {', '.join(FAMILIES)}")
        return out
    if model_args.family:
        config = family_config(model_args.family)
        for key, value in model_args.config.items():
            if not hasattr(config, key):
                keys = sorted(set(config.to_dict()) | set(config.attribute_map))
                out.append(f"config.{key}: not a setting of {type(config).__name__}{did_you_mean(key, keys) or '.'}")
                continue
            default = getattr(config, key)
            try:
                if isinstance(default, (bool, int, float, str)):
                    coerce(value, type(default))
            except Problem as p:
                out.append(f"config.{key}: {p}")
            else:
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0 and isinstance(default, int):
                    out.append(f"config.{key}: {value} must be positive")
    return out


def build_config(model_args):
    """The config of a scratch model: the family's defaults (or name_or_path's config) with model.config on top."""
    if model_args.family:
        config = family_config(model_args.family)
    else:
        config = AutoConfig.from_pretrained(model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
    for key, value in model_args.config.items():
        default = getattr(config, key, None)
        setattr(config, key, coerce(value, type(default)) if isinstance(default, (bool, int, float, str)) else value)
    shape = {"hidden_size", "num_attention_heads"} & set(model_args.config)
    if shape and "head_dim" not in model_args.config and getattr(config, "head_dim", None):
        # llama-style configs store head_dim; it follows a changed width or head count unless set itself.
        config.head_dim = config.hidden_size // config.num_attention_heads
    return config


def usable_positions(config) -> int | None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    return positions - POSITION_OFFSET.get(config.model_type, 0)


def model_problems(model_args, tokenizer_args, options) -> list[str]:
    """Problems seen only by reading the model's config: block_size above its positions, width not divisible by heads.
    A Hub model's config is read at load time instead, so `--check` stays offline."""
    config, problems = local_config(model_args)
    return problems if config is None else shape_problems(config, options)


def local_config(model_args):
    """(config, []) where the model's config can be read without the network; (None, problems) otherwise."""
    from . import paths

    if config_problems(model_args):
        return None, []
    if model_args.init == "scratch" and model_args.family:
        return build_config(model_args), []
    if model_args.name_or_path and paths.looks_local(model_args.name_or_path):
        try:
            return (build_config(model_args) if model_args.init == "scratch" else AutoConfig.from_pretrained(model_args.path)), []
        except (OSError, ValueError) as e:
            return None, [f"model.name_or_path: cannot read a model config from {model_args.name_or_path!r}: {str(e).splitlines()[0]}"]
    return None, []


def model_positions(model_args) -> tuple[int | None, list[str]]:
    """Tokens the model can take (its position embeddings), where its config can be read offline; else None."""
    config, problems = local_config(model_args)
    return (None if config is None else usable_positions(config)), problems


def shape_problems(config, options) -> list[str]:
    out = []
    positions = usable_positions(config)
    if positions is not None and options.block_size > positions:
        out.append(f"model.head_options.block_size: {options.block_size} is above the model's {positions} positions "
                   f"({config.model_type} max_position_embeddings); lower it or raise model.config.max_position_embeddings")
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if hidden and heads and hidden % heads:
        out.append(f"model.config: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    return out


def parameter_counts(model) -> dict:
    """All parameters, and those outside the embeddings (the ones the 6*N*tokens FLOP rule counts)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    # A decoder's output layer tied to the input embedding is one tensor, counted once above.
    return {"parameters": total, "non_embedding_parameters": total - embeddings}


def pack(ds: Dataset, block_size: int, columns: list[str]) -> tuple[Dataset, dict]:
    """Concatenate every row of `columns` and cut the stream into blocks of exactly block_size tokens.

    Works on the Arrow columns in one go (numpy reshape), so the only tokens not in a block are the
    stream's final partial block: fewer than block_size, counted as `tokens_dropped`.
    """
    table = ds.with_format("arrow")
    flat = {c: pc.list_flatten(table[c]) for c in columns}
    total = len(flat["input_ids"])
    blocks = total // block_size
    out = {}
    for c, values in flat.items():
        if c == "offset_mapping":  # (start, end) pairs per token
            values = np.asarray(pc.list_flatten(values).to_numpy(zero_copy_only=False)).reshape(-1, 2)
            out[c] = values[: blocks * block_size].reshape(blocks, block_size, 2).tolist()
        else:
            out[c] = values.to_numpy(zero_copy_only=False)[: blocks * block_size].reshape(blocks, block_size).tolist()
    return Dataset.from_dict(out), {"tokens": total, "blocks": blocks, "tokens_dropped": total - blocks * block_size}


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

    needs_labels = False
    predictions_file = None  # a corpus has nothing to predict; test and validation report loss and perplexity
    pipeline_use = ""  # what the head's transformers pipeline does with the model, named when `predict` refuses
    metric_names = ("perplexity", "accuracy")
    default_metrics = ("perplexity", "accuracy")
    # Keep every column tokenize makes (offset_mapping feeds whole-word masking; Trainer would drop it).
    training_defaults: ClassVar[dict] = {"remove_unused_columns": False}
    auto_class = AutoModelForMaskedLM
    masked = True
    tokenizer_algorithm = "wordpiece"

    @classmethod
    def recipe_problems(cls, options, data_args, training_keys, steps):
        if len(data_args.text_columns) != 1:
            return [f"data.text_columns: {cls.name} reads one text column, got {data_args.text_columns}"]
        return []

    def encode(self, splits, args, where):
        self.text = args.text_columns[0]
        return DatasetDict({name: ds.select_columns([self.text]) for name, ds in splits.items()})

    def check_train(self, train):
        if len(train) == 0:
            raise RecipeError(f"data: the training corpus is empty after preprocessing; nothing to pretrain on (column {self.text!r})")

    def encode_texts(self, tokenizer, texts: list[str]) -> dict:
        raise NotImplementedError

    def tokenize(self, splits, tokenizer, args):
        from .data import length_stats, tokenizer_identity

        self.tokenizer = tokenizer
        o = self.options
        out, stats = {}, {}
        for name, ds in splits.items():
            fingerprint = Hasher.hash([ds._fingerprint, tokenizer_identity(tokenizer), self.name, o.block_size, o.packing,
                                       getattr(o, "whole_word_mask", False), "lm"])
            ds = ds.map(lambda b: self.encode_texts(tokenizer, b[self.text]), batched=True, remove_columns=ds.column_names,
                        num_proc=args.num_proc, new_fingerprint=fingerprint, desc=f"tokenize {name}")
            lengths = np.asarray(pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_numpy())
            stats[name] = length_stats(lengths, o.block_size)
            if o.packing:
                ds, counts = pack(ds, o.block_size, ds.column_names)
            else:
                ds = ds.map(lambda b: {k: [v[: o.block_size] for v in b[k]] for k in b}, batched=True, desc=f"truncate {name}")
                counts = {"tokens": int(np.minimum(lengths, o.block_size).sum()), "blocks": len(ds), "tokens_dropped": int(np.maximum(lengths - o.block_size, 0).sum())}
            stats[name].update(counts)
            if name == "train" and not len(ds):
                raise RecipeError(f"model.head_options.block_size: the training corpus has {counts['tokens']} tokens, fewer than one block of {o.block_size}")
            if not self.masked:
                ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True, desc=f"labels {name}")
            out[name] = ds
        # max_length: the data report reads it; texts over a block are split across blocks when packing, cut when not.
        return DatasetDict(out), {"max_length": o.block_size, "block_size": o.block_size, "packing": o.packing, "splits": stats}

    def load_model(self, model_args):
        if model_args.init == "scratch":
            config = build_config(model_args)
            self.fit_config(config, model_args)
            model = self.auto_class.from_config(config)
        else:
            model = self.auto_class.from_pretrained(model_args.path, **load_kwargs(model_args))
            problems = shape_problems(model.config, self.options)
            if problems:
                raise RecipeError(problems)
        self.stored["init"] = model_args.init
        self.stored.update(parameter_counts(model))
        self.record(model)
        return model

    def fit_config(self, config, model_args) -> None:
        """A scratch model's vocabulary and special ids come from the tokenizer unless model.config says otherwise."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise RecipeError("tokenizer: a scratch model needs a tokenizer (tokenizer.train, or tokenizer.name_or_path)")
        size = len(tokenizer)
        if "vocab_size" in model_args.config and model_args.config["vocab_size"] < size:
            raise RecipeError(f"model.config.vocab_size: {model_args.config['vocab_size']} is smaller than the tokenizer's {size} tokens")
        if "vocab_size" not in model_args.config:
            config.vocab_size = size
        for role in ("pad", "bos", "eos"):
            token_id = getattr(tokenizer, f"{role}_token_id", None)
            if token_id is not None:
                setattr(config, f"{role}_token_id", token_id)
        problems = shape_problems(config, self.options)
        if problems:
            raise RecipeError(problems)

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

    def compute_metrics(self, metric_names, labels=None):
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

    def prediction_columns(self, output, test, trainer):
        return {}


@register("masked_lm")
class MaskedLM(LanguageModel):
    """BERT's objective: predict `mlm_probability` of the tokens from both sides; accuracy = masked tokens right."""

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

    Options = LMOptions
    auto_class = AutoModelForCausalLM
    masked = False
    tokenizer_algorithm = "byte_level_bpe"
    pipeline_task = "text-generation"
    pipeline_use = "continue texts"

    def encode_texts(self, tokenizer, texts):
        end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if end is None:
            raise RecipeError("tokenizer: causal_lm needs an end-of-text token between documents (eos); this tokenizer has none")
        ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [x + [end] for x in ids]}

    def collator(self, tokenizer, model, pad_to_multiple_of):
        pad_with_eos(tokenizer)
        # Pads input_ids with the pad id and labels with -100: padding never enters the loss, end-of-text does.
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=pad_to_multiple_of)
