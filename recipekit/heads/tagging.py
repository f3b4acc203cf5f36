"""`token_classification`: one tag per word (BIO), e.g. named entities."""

from __future__ import annotations

from collections import Counter

from datasets import ClassLabel, DatasetDict, Sequence
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, EvalPrediction

from ..core.errors import RecipeError
from ..evaluation import metrics as M
from ..modeling.models import scratch_config
from .base import (
    Head,
    column_values,
    first_bad,
    load_kwargs,
    map_splits,
    pad_like_tokenizer,
    pick,
    register,
    reset_head_layers,
    source_row,
    starting_state,
)
from .classification import LENGTH_KEY


def align(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """One label per sub-token: the word's tag on its first sub-token, -100 on the rest and on special tokens."""
    out, previous = [], None
    for word in word_ids:
        out.append(-100 if word is None or word == previous else tags[word])
        previous = word
    return out


@register("token_classification")
class TokenClassification(Head):
    """Word-level tags (BIO): text_columns = [the tokens list column], label_column = the tags list column.

    Only a word's first sub-token carries its tag; the others get -100, which the loss and metrics skip.
    Metrics are entity-level (seqeval's default rules) plus per-word tag accuracy.
    """
    aliases = ('ner', 'tagging', 'token_tagging', 'pos', 'pos_tagging', 'sequence_labeling', 'sequence_labelling', 'named_entity_recognition')

    long_text = ("head",)  # its own tokenize: inputs and targets, words or blocks, not one cut text

    pipeline_task = "token-classification"
    predictions_file = "predictions.jsonl"
    not_exportable = "its tags are per word, aligned from sub-word tokens by the tokenizer's word ids, which the ONNX graph does not carry"
    batch_mean_loss = True  # the model's cross-entropy is a batch mean; Trainer must not rescale it (train.py)
    metric_names = tuple(M.TOKENS)
    default_metrics = tuple(M.TOKENS)

    @classmethod
    def recipe_problems(cls, options, recipe):
        out = []
        if len(recipe.data.text_columns) != 1:
            out.append(f"data.text_columns: token_classification reads one column of word lists, got {recipe.data.text_columns}")
        if recipe.steps:
            out.append("preprocess: steps edit text strings; token_classification data is already split into words")
        return out

    @property
    def words(self) -> str:
        return self.data.text_columns[0]

    def as_input(self, ds):
        """Rows to tag: a text (not yet a word list) is split on whitespace, as `run.py predict` receives plain text."""
        words = self.words
        if all(isinstance(v, list) for v in column_values(ds, words)):
            return ds
        return ds.map(lambda b: {words: [v if isinstance(v, list) else str(v or "").split() for v in b[words]]}, batched=True)

    def encode(self, splits, where):
        words, column = self.words, self.data.label_column
        splits = DatasetDict({name: self.tag_names(ds, column) for name, ds in splits.items()})
        for split, ds in splits.items():
            first_bad(ds, words, lambda v: not isinstance(v, list) or not all(isinstance(w, str) for w in v), where, split,
                      "expected a list of words, got")
            if column in ds.column_names:
                first_bad(ds, column, lambda v: not isinstance(v, list), where, split, "expected a list of tags, got")
                pairs = [len(w) != len(t) for w, t in zip(column_values(ds, words), column_values(ds, column))]
                if any(pairs):
                    i = pairs.index(True)
                    raise RecipeError(
                        f"data.label_column: {where(split, source_row(ds, i))}: {len(ds[i][words])} words in {words!r} "
                        f"but {len(ds[i][column])} tags in {column!r} ({sum(pairs)} rows like it in {split})"
                    )
        self.state.labels = sorted({t for tags in column_values(splits["train"], column) for t in tags}, key=lambda t: (t != "O", t[2:], t))
        known = set(self.labels)
        for split, ds in splits.items():
            if split != "train" and column in ds.column_names:
                first_bad(ds, column, lambda v: not set(v) <= known, where, split, "tag not seen in training in",
                          f"; training tags: {', '.join(self.labels)}")
        return DatasetDict({name: self.encode_split(ds) for name, ds in splits.items()})

    def encode_split(self, ds):
        column = self.data.label_column
        if column not in ds.column_names:
            return ds
        ds = self.tag_names(ds, column)
        index = {t: i for i, t in enumerate(self.labels)}
        unknown = sorted({t for tags in column_values(ds, column) for t in tags} - set(index))
        if unknown:
            raise RecipeError(f"data.label_column: tags not seen in training: {', '.join(unknown[:5])}; training tags: {', '.join(self.labels)}")
        ds = ds.map(lambda b: {"labels": [[index[t] for t in tags] for tags in b[column]]}, batched=True, desc="encode tags")
        return ds.remove_columns(column) if column != "labels" else ds

    @staticmethod
    def tag_names(ds, column):
        # Hub sets (conll2003) store tags as ids with the names in the feature; use the names.
        feature = ds.features.get(column)
        inner = getattr(feature, "feature", None)
        if isinstance(feature, (Sequence, list)) or inner is not None:
            inner = inner if inner is not None else feature[0]
            if isinstance(inner, ClassLabel):
                return ds.map(lambda b: {column: [[inner.int2str(t) for t in tags] for tags in b[column]]}, batched=True)
        return ds

    def learn(self, train):
        if not any(t != "O" for t in self.labels):
            raise RecipeError("data.label_column: the training split has no tag other than 'O'; nothing to learn")

    def label_counts(self, ds):
        counts = Counter(t for tags in column_values(ds, "labels") for t in tags)
        return {name: counts.get(i, 0) for i, name in enumerate(self.labels)}

    def tokenize(self, splits, tokenizer):
        tokenizer = self.prepare_tokenizer(tokenizer)

        def encode(batch):
            enc = tokenizer(batch[self.words], is_split_into_words=True, truncation=True, max_length=self.data.max_length)
            if "labels" in batch:
                enc["labels"] = [align(enc.word_ids(i), tags) for i, tags in enumerate(batch["labels"])]
            return enc

        return map_splits(splits, encode, self.data.max_length)

    def load_model(self, model_args, tokenizer):
        self.state.init = model_args.init
        common = {"num_labels": len(self.labels), "id2label": dict(enumerate(self.labels)),
                  "label2id": {t: i for i, t in enumerate(self.labels)}}
        if model_args.init == "scratch":
            config = scratch_config(model_args, tokenizer, self.data.max_length, LENGTH_KEY)
            config.update(common)
            model = AutoModelForTokenClassification.from_config(config)
        else:
            saved = starting_state(model_args)
            model = AutoModelForTokenClassification.from_pretrained(model_args.path, ignore_mismatched_sizes=True, **common,
                                                                    **load_kwargs(model_args))
            if saved is not None and (saved.head != self.name or saved.labels != self.labels):
                reset_head_layers(model)
        pad_like_tokenizer(model, tokenizer)
        self.record(model)
        return model

    def load_trained(self, path, model_args):
        return AutoModelForTokenClassification.from_pretrained(path, **load_kwargs(model_args))

    def collator(self, tokenizer, model, pad_to_multiple_of):
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def compute_metrics(self, metric_names, tokenizer=None):
        def compute(prediction):
            predicted = prediction.predictions.argmax(-1)
            true_tags, pred_tags = [], []
            for gold, guess in zip(prediction.label_ids, predicted):
                keep = gold != -100
                true_tags.append([self.labels[i] for i in gold[keep]])
                pred_tags.append([self.labels[i] for i in guess[keep]])
            return pick(metric_names, M.entity_scores(true_tags, pred_tags))

        return compute

    def gold(self, split):
        return {self.data.label_column: [[self.labels[i] for i in row] for row in column_values(split, "labels")]} if "labels" in split.column_names else {}

    def prediction_columns(self, predictions, split, tokenizer):
        predicted = predictions.argmax(-1)
        words = column_values(split, self.words)
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.data.max_length)
        rows = []
        for i, row in enumerate(words):
            # A word cut off by max_length gets no prediction: "O", so every word has a tag.
            tags = ["O"] * len(row)
            ids = enc.word_ids(i)
            for position, word in enumerate(ids):
                if word is not None and (position == 0 or ids[position - 1] != word):
                    tags[word] = self.labels[int(predicted[i, position])]
            rows.append(tags)
        return {"predicted": rows}

    def evaluation(self, label_ids, predictions):
        return {"scores": self.compute_metrics(list(M.TOKENS))(EvalPrediction(predictions=predictions, label_ids=label_ids))}

    def decision_rule(self):
        return "the most probable tag of each word's first sub-token"

