"""`setfit`: few-shot classification with the setfit library (contrastive fine-tuning of a sentence encoder on
pairs of training texts, then a logistic regression on the embeddings).

With 8-64 labelled texts per class, fine-tuning a softmax layer is unstable; setfit learns from the pairs
those texts make (same class: close, other class: apart), so a few texts give hundreds of training signals.
The library trains; the run keeps the result as one transformers model (`SentenceClassifier`: the encoder,
its sentence pooling and normalisation, and the logistic regression as a linear layer), so predictions are one
forward pass to logits and the run is an ordinary run folder: metrics, predictions, report, card, predict,
evaluate, compare, cv, serve and ONNX export read it as they read a softmax run.

Trainer still evaluates and predicts; only its `train` is setfit's (`SetFitTraining`). The contrastive phase
saves checkpoints as the run's training.save_strategy says and `--resume` continues from the newest; the
logistic regression is fitted again after it (seconds, deterministic). TrainingArguments that shape a training
loop (learning rate, epochs, batch size...) are refused in favour of the head options, the library's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_utils import TrainOutput

from ..core.console import QuietProgress
from ..core.errors import RecipeError
from ..evaluation import metrics as M
from .base import column_values, load_kwargs, reduce, register
from .classification import ClassLabels
from .custom import POOLINGS, pool

SAMPLING = ["oversampling", "undersampling", "unique"]
# TrainingArguments keys that shape a training loop setfit runs by its own options (the head options instead).
LOOP_KEYS = {
    "learning_rate": "body_learning_rate", "num_train_epochs": "num_epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size", "warmup_ratio": "warmup_proportion", "warmup_steps": "warmup_proportion",
    "gradient_accumulation_steps": None, "weight_decay": None, "lr_scheduler_type": None, "label_smoothing_factor": None,
    "resume_from_checkpoint": None, "load_best_model_at_end": None, "optim": None, "fp16": None, "bf16": None,
}


@dataclass
class SetFitOptions:
    """The recipe's `model.head_options` for head setfit: setfit.TrainingArguments' names and defaults."""

    num_iterations: int | None = field(
        default=None, metadata={"help": "pairs drawn per training text and epoch (20 in the SetFit paper); None: sampling_strategy decides"})
    sampling_strategy: str = field(
        default="oversampling", metadata={"help": "without num_iterations: oversampling (every unique pair, the rarer kind repeated), "
                                                  "undersampling, or unique (each pair once)", "choices": SAMPLING})
    num_epochs: int = field(default=1, metadata={"help": "contrastive epochs over the pairs"})
    max_steps: int = field(default=-1, metadata={"help": "stop contrastive training after this many steps; -1: run num_epochs"})
    batch_size: int = field(default=16, metadata={"help": "pairs per contrastive step"})
    body_learning_rate: float = field(default=2.0e-5, metadata={"help": "the encoder's learning rate during contrastive training"})
    warmup_proportion: float = field(default=0.1, metadata={"help": "share of the contrastive steps spent warming the learning rate up"})
    head_max_iter: int = field(default=1000, metadata={"help": "iterations of the logistic regression fitted on the embeddings"})

    def problems(self) -> list[str]:
        out = []
        if self.num_iterations is not None and self.num_iterations < 1:
            out.append(f"num_iterations: {self.num_iterations} must be at least 1 (or null)")
        for key in ("num_epochs", "batch_size", "head_max_iter"):
            if getattr(self, key) < 1:
                out.append(f"{key}: {getattr(self, key)} must be at least 1")
        if self.max_steps == 0 or self.max_steps < -1:
            out.append(f"max_steps: {self.max_steps} must be positive, or -1 to run num_epochs")
        if not 0.0 < float(self.body_learning_rate) < 1.0:
            out.append(f"body_learning_rate: {self.body_learning_rate} must be in (0, 1)")
        if not 0.0 <= float(self.warmup_proportion) < 1.0:
            out.append(f"warmup_proportion: {self.warmup_proportion} must be in [0, 1)")
        return out


class SentenceClassifierConfig(PretrainedConfig):
    model_type = "recipekit_sentence_classifier"

    def __init__(self, encoder: dict | None = None, pooling: str = "mean", normalize: bool = True, **kwargs):
        self.encoder = encoder or {}
        self.pooling = pooling
        self.normalize = normalize
        super().__init__(**kwargs)


class SentenceClassifier(PreTrainedModel):
    """A sentence-transformers encoder (transformer, pooling, optional normalisation) with a linear layer: the
    setfit model as one transformers model, so every command reads it as any sequence classifier."""

    config_class = SentenceClassifierConfig
    base_model_prefix = "encoder"

    def __init__(self, config: SentenceClassifierConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(AutoConfig.for_model(**config.encoder))
        self.classifier = nn.Linear(self.encoder.config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if module is self.classifier:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        vector = pool(hidden, attention_mask, self.config.pooling)
        if self.config.normalize:
            vector = nn.functional.normalize(vector, p=2, dim=1)
        return SequenceClassifierOutput(logits=self.classifier(vector))


AutoConfig.register(SentenceClassifierConfig.model_type, SentenceClassifierConfig)
AutoModelForSequenceClassification.register(SentenceClassifierConfig, SentenceClassifier)


class SetFitTraining(Trainer):
    """Trainer whose `train` is setfit's: contrastive pairs on the encoder, then the logistic regression, copied
    into the model's linear layer. Evaluation and prediction stay Trainer's.

    The contrastive phase runs in setfit's own Trainer (sentence-transformers' Trainer beneath it), which saves
    checkpoints into the run's output_dir by the run's save_strategy, save_steps and save_total_limit, and
    continues from one on `--resume`. Callbacks added to this Trainer after it was built (the stop on SIGTERM,
    a test's) see the contrastive steps."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.built_with = list(self.callback_handler.callbacks)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        started = time.time()
        job = self.model.setfit_job
        added = [c for c in self.callback_handler.callbacks if c not in self.built_with and not isinstance(c, QuietProgress)]
        loss = job.fit(self.args, added, resume_from_checkpoint)
        self.state.global_step = job.steps
        # The contrastive phase's logged losses, those before a --resume too: run.py's whole-run loss reads them.
        self.state.log_history.extend(job.logged)
        metrics = {"train_runtime": round(time.time() - started, 4), "train_pairs": job.pairs, "train_loss": loss}
        self.state.log_history.append({**metrics, "step": job.steps})
        return TrainOutput(job.steps, loss, metrics)


class SetFitJob:
    """What setfit trains for one run: its model (sharing the encoder with the run's model) and the training texts."""

    def __init__(self, setfit_model, model: SentenceClassifier, options: SetFitOptions, texts: list[str], labels: list[int], max_length: int):
        self.setfit_model, self.model, self.options = setfit_model, model, options
        self.texts, self.labels, self.max_length = texts, labels, max_length
        self.steps, self.pairs, self.logged = 0, 0, []

    def fit(self, run_args, callbacks: list, checkpoint: str | None) -> float:
        from datasets import Dataset
        from setfit import Trainer as SetFitTrainer
        from setfit import TrainingArguments as SetFitArguments

        o = self.options
        args = SetFitArguments(
            output_dir=run_args.output_dir, batch_size=o.batch_size, num_epochs=o.num_epochs, max_steps=o.max_steps,
            sampling_strategy=o.sampling_strategy, num_iterations=o.num_iterations,
            body_learning_rate=float(o.body_learning_rate), warmup_proportion=float(o.warmup_proportion),
            max_length=self.max_length, seed=run_args.seed, show_progress_bar=not run_args.disable_tqdm, report_to="none",
            save_strategy=str(getattr(run_args.save_strategy, "value", run_args.save_strategy)), save_steps=run_args.save_steps,
            save_total_limit=run_args.save_total_limit, logging_steps=run_args.logging_steps, eval_strategy="no",
        )
        trainer = SetFitTrainer(model=self.setfit_model, args=args, callbacks=callbacks,
                                train_dataset=Dataset.from_dict({"text": self.texts, "label": self.labels}))
        # setfit's train() is these two phases, but passes no checkpoint to the contrastive one: run them here.
        pairs, loss = trainer.get_dataset(self.texts, self.labels, args=args, max_pairs=-1 if o.max_steps == -1 else o.max_steps * o.batch_size)
        contrastive = trainer.st_trainer  # the sentence-transformers Trainer setfit runs the contrastive steps in
        contrastive.train_dataset, contrastive.loss = pairs, loss
        output = contrastive.train(resume_from_checkpoint=checkpoint)
        state = contrastive.state
        self.steps, self.pairs = int(state.global_step), len(pairs)
        # setfit logs the contrastive loss as "embedding_loss"; run.py's whole-run loss reads Trainer's "loss".
        self.logged = [{"step": h["step"], "loss": h[key]} for h in state.log_history for key in ("embedding_loss", "loss")
                       if key in h and "step" in h]
        stopped = contrastive.control.should_training_stop and self.steps < state.max_steps
        if not stopped:  # a stop on a signal: its checkpoint is saved; the classifier is fitted on --resume
            trainer.train_classifier(self.texts, self.labels, args=args)
            copy_head(self.setfit_model.model_head, self.model.classifier)
        return float(output.training_loss)  # the mean over this call's steps, as Trainer's train_loss is


def copy_head(regression, linear: nn.Linear) -> None:
    """The fitted logistic regression as the linear layer's logits: softmax of them is its predict_proba (two
    classes: logits 0 and w.x + b, whose softmax is the sigmoid it reads)."""
    coef = torch.tensor(regression.coef_, dtype=linear.weight.dtype)
    bias = torch.tensor(regression.intercept_, dtype=linear.bias.dtype)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        if coef.shape[0] == 1:
            linear.weight[1] = coef[0]
            linear.bias[1] = bias[0]
        else:
            linear.weight.copy_(coef)
            linear.bias.copy_(bias)


@register("setfit")
class SetFit(ClassLabels):
    """One class per row, learnt by setfit from few labelled texts; probabilities are the logistic regression's."""

    Options = SetFitOptions
    trainer_base = SetFitTraining
    accepts_head_config = False
    splits_batches = False  # setfit batches its own pairs
    streams = False  # a few labelled texts, held whole: nothing to stream
    long_text: ClassVar[tuple[str, ...]] = ("head",)  # one embedding per text

    @classmethod
    def recipe_problems(cls, options, recipe):
        out = [f"training.{key}: head setfit trains with its own options, not TrainingArguments' loop"
               + (f"; set model.head_options.{instead}" if instead else "; leave it out")
               for key, instead in LOOP_KEYS.items() if key in recipe.training_keys]
        if len(recipe.data.text_columns) != 1:
            out.append(f"data.text_columns: {recipe.data.text_columns}: head setfit embeds one text per row; name one column")
        if recipe.model.init != "pretrained":
            out.append(f"model.init: {recipe.model.init!r}: head setfit fine-tunes a pretrained sentence encoder; use pretrained")
        if recipe.model.peft:
            out.append("model.peft: head setfit trains the whole encoder with setfit; leave peft out")
        sanity = getattr(recipe, "sanity", None)
        if sanity is not None and sanity.active:
            out.append("sanity: head setfit has no Trainer loop to overfit a batch or sweep a learning rate in; leave sanity out")
        return out

    def tokenize(self, splits, tokenizer):
        # setfit tokenizes the texts itself; the run keeps them for it (Trainer only sees token ids).
        if "train" in splits:  # `predict` tokenizes new rows only
            self.texts = [str(t) for t in column_values(splits["train"], self.data.text_columns[0])]
            self.train_labels = [int(v) for v in column_values(splits["train"], "labels")]
        return super().tokenize(splits, tokenizer)

    def load_model(self, model_args, tokenizer):
        from sentence_transformers.models import Normalize
        from setfit import SetFitModel

        self.state.init = model_args.init
        setfit_model = SetFitModel.from_pretrained(
            model_args.path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code,
            head_params={"max_iter": self.options.head_max_iter})
        body = setfit_model.model_body
        setfit_model.model_body.max_seq_length = self.data.max_length
        pooling = str(getattr(body[1], "pooling_mode", "mean")) if len(body) > 1 else "mean"
        if pooling not in POOLINGS:
            raise RecipeError(f"model.name_or_path: {model_args.path!r} pools sentences by {pooling!r}; head setfit reads {', '.join(POOLINGS)}")
        encoder = body[0].auto_model
        id2label = dict(enumerate(self.labels))
        config = SentenceClassifierConfig(
            encoder=encoder.config.to_dict(), pooling=pooling, normalize=any(isinstance(m, Normalize) for m in body),
            num_labels=len(self.labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
            problem_type="single_label_classification")
        model = SentenceClassifier(config, encoder=encoder)
        model.setfit_job = SetFitJob(setfit_model, model, self.options, self.texts, self.train_labels, self.data.max_length)
        self.record(model)
        return model

    def load_trained(self, path, model_args):
        return AutoModelForSequenceClassification.from_pretrained(path, **load_kwargs(model_args))

    def loss(self, training_args):
        # Evaluation's loss only: setfit's own contrastive loss trains.
        def compute(outputs, labels, num_items_in_batch=None):
            return reduce(F.cross_entropy(outputs["logits"], labels, reduction="none"), num_items_in_batch)

        return compute

    def predictions_of(self, logits):
        return M.softmax(logits)

    def decision_rule(self):
        return "the most probable label (setfit's logistic regression on the sentence embeddings)"
