"""Models and tokenizers made here rather than loaded: tokenizer training, models built from a config
(`model.init: scratch`), their shape checks, parameter counts, and packing texts into blocks.

`model.init: scratch` builds a fresh model from a config family (`model.family: bert`) or from another
model's config (`name_or_path`), with `model.config` overrides, for every head; `tokenizer.train` trains a
new tokenizer on the training split (after the `preprocess:` steps), which is saved with the model.

Packing (the pretraining heads' `head_options.packing: true`, the default) concatenates every text, each
closed by its special tokens, and cuts the stream into blocks of exactly `block_size` tokens: no padding,
every position trains, and documents longer than a block are kept whole across blocks. Only the stream's
last partial block (under `block_size` tokens) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset
from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedTokenizerFast

from ..core import paths
from ..core.errors import RecipeError
from ..core.schema import Problem, build_kwargs, coerce, did_you_mean, not_one_of, show

INITS = ["pretrained", "scratch"]
# What model.config may change in a pretrained model: fewer layers load the first N layers' weights (a smaller
# student from its teacher's checkpoint); any other change of shape would leave weights that fit nowhere.
PRETRAINED_CONFIG_KEYS = ("num_hidden_layers",)
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
    if isinstance(train, Dataset):
        texts = train.with_format("arrow")[text_column]
        if args.max_texts is not None:
            texts = texts[: args.max_texts]
        n = len(texts)
        tok.train_from_iterator((texts[i:i + 1000].to_pylist() for i in range(0, n, 1000)), trainer, length=n)
    else:  # data.streaming: one pass over the stream (or its first max_texts rows); the trainer keeps counts, not texts
        rows = train if args.max_texts is None else train.take(args.max_texts)
        tok.train_from_iterator((batch[text_column] for batch in rows.iter(batch_size=1000)), trainer)

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
        for key, value in model_args.config.items():
            if key not in PRETRAINED_CONFIG_KEYS:
                out.append(f"config.{key}: a pretrained model keeps its trained shape; with init: pretrained only "
                           f"{', '.join(PRETRAINED_CONFIG_KEYS)} applies (keep the first N layers); other overrides need init: scratch")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"config.{key}: {show(value)} must be a positive number of layers")
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


def local_config(model_args):
    """(config, problems): the model's config where it can be read without the network, else None. A Hub
    model's config is read at load time instead, so `--check` stays offline."""
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


def kept_layers_problems(model_args, config) -> list[str]:
    """A pretrained model keeps the first N of its layers; it has no weights for more."""
    wanted, layers = model_args.config.get("num_hidden_layers"), getattr(config, "num_hidden_layers", None)
    if model_args.init != "pretrained" or wanted is None:
        return []
    if layers is None:
        return [f"model.config.num_hidden_layers: {config.model_type} has no num_hidden_layers setting to cut"]
    if wanted > layers:
        return [(f"model.config.num_hidden_layers: {wanted} is more than the {layers} layers of {model_args.name_or_path!r}; "
                f"a pretrained model can keep its first 1 to {layers}")]
    return []


def shape_problems(config, length: int, length_key: str, pretrained: bool = False, long_text: tuple = ()) -> list[str]:
    """A length the model cannot hold, and a fix that works for it: a scratch model may get more positions; a
    pretrained model's are learned and fixed, so the length comes down, and long texts are read in windows."""
    out = []
    positions = usable_positions(config)
    if positions is not None and length > positions:
        if not pretrained:
            fix = "lower it or raise model.config.max_position_embeddings"
        else:
            fix = f"lower it to {positions} or less (a pretrained model's position embeddings are fixed)"
            ways = [w for w in ("chunks", "head_tail") if w in long_text]
            if ways:
                fix += (f"; to use more of a long text, keep {length_key}: {positions} and set data.long_text: "
                        + " or ".join(ways) + " (chunks: overlapping windows pooled per document; head_tail: its start and end)")
        out.append(f"{length_key}: {length} is above the model's {positions} positions ({config.model_type} max_position_embeddings); {fix}")
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if hidden and heads and hidden % heads:
        out.append(f"model.config: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    return out


def scratch_config(model_args, tokenizer, length: int, length_key: str):
    """The config of a new model: build_config, with the vocabulary and special ids of the tokenizer unless
    model.config sets them; refused when the tokenizer does not fit it or `length` exceeds its positions."""
    config = build_config(model_args)
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
    problems = shape_problems(config, length, length_key)
    if problems:
        raise RecipeError(problems)
    return config


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


# Config attribute names of the same dropout across architectures; every one a config has is set.
DROPOUT_NAMES = {
    "hidden_dropout": ("hidden_dropout_prob", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier_dropout": ("classifier_dropout", "seq_classif_dropout", "summary_first_dropout", "classifier_dropout_prob"),
}


def config_overrides(model_args) -> dict:
    """The recipe's dropout settings under this model's own config names, for `from_pretrained(**overrides)`."""
    wanted = {key: getattr(model_args, key) for key in DROPOUT_NAMES if getattr(model_args, key) is not None}
    if not wanted:
        return {}
    config = AutoConfig.from_pretrained(model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code)
    overrides = {}
    for key, value in wanted.items():
        names = [name for name in DROPOUT_NAMES[key] if hasattr(config, name)]
        if not names:
            raise RecipeError(
                f"model.{key}: {config.model_type} has no such setting (looked for {', '.join(DROPOUT_NAMES[key])})"
            )
        overrides.update(dict.fromkeys(names, value))
    return overrides
