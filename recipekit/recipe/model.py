"""The `model:` section: which checkpoint (or new model), which head, and the head's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core import paths
from ..core.schema import Problem, build_kwargs
from ..heads import DEFAULT_HEAD, HEADS, head_synonyms, saved_state
from ..heads.custom import HeadConfig
from ..heads.distillation import DEFAULT_TEMPERATURE
from ..modeling.adapters import peft_problems
from ..modeling.models import (
    FAMILIES,
    INITS,
    config_problems,
)
from ..outputs.folder import FINISHED_MARKER

DTYPES = ["auto", "float32", "bfloat16", "float16"]
# What users write for a `model:` key -> the key (see recipe/training.py's TRAINING_SYNONYMS).
MODEL_SYNONYMS = {
    **dict.fromkeys(["name", "model_name", "model_name_or_path", "pretrained_model_name_or_path", "model", "checkpoint", "path", "model_id"],
                    "name_or_path"),
    **dict.fromkeys(["task", "head_type", "type", "problem_type"], "head"),
    **dict.fromkeys(["dropout", "hidden_dropout_prob"], "hidden_dropout"),
    **dict.fromkeys(["attention_probs_dropout_prob"], "attention_dropout"),
    **dict.fromkeys(["lora", "adapter", "adapters"], "peft"),
    **dict.fromkeys(["options", "head_args"], "head_options"),
}


@dataclass
class ModelArgs:
    name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id (org/name), local folder, or package:NAME/path inside an installed package"}
    )
    head: str = field(
        default=DEFAULT_HEAD,
        metadata={"help": "task head; see the heads table", "choices": lambda: list(HEADS), "synonyms": head_synonyms, "what": "a head"},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub branch, tag or commit to load"})
    dtype: str = field(
        default="float32",
        metadata={"help": "weight dtype at load; mixed precision is training.bf16/fp16", "choices": DTYPES},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "run model code shipped with a Hub repository (only for repos you trust)"}
    )
    hidden_dropout: float | None = field(
        default=None, metadata={"help": "dropout on the encoder's hidden states (BERT's hidden_dropout_prob, default 0.1); null keeps the model's"}
    )
    attention_dropout: float | None = field(
        default=None, metadata={"help": "dropout on attention weights (BERT's attention_probs_dropout_prob); null keeps the model's"}
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "dropout before the task head (BERT's classifier_dropout); null keeps the model's"}
    )
    peft: dict | None = field(
        default=None,
        metadata={
            "help": "train LoRA adapters instead of every weight: peft.LoraConfig keys (r, lora_alpha, lora_dropout, "
            "target_modules, modules_to_save, ...); {} takes peft's defaults; the head's new layer always trains"
        },
    )

    head_options: dict = field(
        default_factory=dict, metadata={"help": "the head's own settings (threshold, class_weights, loss ...); see the heads table"}
    )
    head_config: dict = field(
        default_factory=dict,
        metadata={"help": "a custom pooled head on the encoder: pooling, hidden_sizes, activation, dropout, freeze_encoder"},
    )
    init: str = field(
        default="pretrained",
        metadata={"help": "pretrained: load name_or_path's weights; scratch: a new, randomly initialised model", "choices": INITS},
    )
    family: str | None = field(
        default=None, metadata={"help": f"with init: scratch, the config family to build ({', '.join(FAMILIES)}, ...)"}
    )
    config: dict = field(
        default_factory=dict,
        metadata={"help": "with init: scratch, config overrides: num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, max_position_embeddings, vocab_size ...; "
                  "with init: pretrained, only num_hidden_layers (keep the first N layers)"},
    )
    teacher: str | None = field(
        default=None,
        metadata={"help": "a finished run (its output_dir) with the same head and labels: train on a mix of the gold labels and its predictions (distillation)"},
    )
    teacher_temperature: float = field(
        default=DEFAULT_TEMPERATURE, metadata={"help": "softens the teacher's and the student's distributions in the teacher's term (Hinton et al. 2015)"}
    )
    teacher_weight: float = field(
        default=0.5, metadata={"help": "share of the teacher's term in the loss, the gold labels' loss having the rest (0: the plain loss)"}
    )

    def head_problems(self) -> list[str]:
        """Check head_options against the head's Options dataclass and head_config against HeadConfig."""
        head = HEADS.get(self.head)
        if head is None:
            return []
        errors: list[str] = []
        options = build_kwargs(head.Options, self.head_options, "head_options", errors)
        if not errors:
            errors += [f"head_options.{p}" for p in head.Options(**options).problems()]
        if "freeze_layers" in self.head_config:
            errors.append("head_config.freeze_layers: freezing layers is regularization.freeze_layers, for every head; move it there")
        elif self.head_config:
            if not head.accepts_head_config:
                accepting = [name for name, h in HEADS.items() if h.accepts_head_config]
                errors.append(f"head_config: head {self.head!r} has no custom head; heads that take one: {', '.join(accepting)}")
            else:
                config_errors: list[str] = []
                config = build_kwargs(HeadConfig, self.head_config, "head_config", config_errors)
                if not config_errors:
                    config_errors += [f"head_config.{p}" for p in HeadConfig(**config).problems()]
                errors += config_errors
        return errors

    def options(self):
        return HEADS[self.head].Options(**self.head_options)

    def problems(self) -> list[str]:
        out = [
            f"{key}: {getattr(self, key)} must be a probability in [0, 1)"
            for key in ("hidden_dropout", "attention_dropout", "classifier_dropout")
            if getattr(self, key) is not None and not 0.0 <= getattr(self, key) < 1.0
        ]
        if self.peft is not None:
            out += peft_problems(self.peft)
        out += self.head_problems() + config_problems(self) + self.teacher_problems()
        if self.init == "scratch" and self.family and not self.name_or_path:
            return out  # built from a config family: nothing to load
        return out + self.path_problems()

    def teacher_problems(self) -> list[str]:
        """Cheap checks of the teacher (files only, so `--check` stays offline and fast); its head and labels are
        compared with the student's once the data is encoded (recipekit/training/teacher.py)."""
        out = []
        if self.teacher_temperature <= 0:
            out.append(f"teacher_temperature: {self.teacher_temperature} must be positive (1: the plain softmax; 2-5 is usual)")
        if not 0.0 <= self.teacher_weight <= 1.0:
            out.append(f"teacher_weight: {self.teacher_weight} must be in [0, 1] (0: gold labels only, 1: the teacher only)")
        if self.teacher is None:
            return out
        head = HEADS.get(self.head)
        if head is not None and head.distillation is None:
            accepting = [name for name, h in HEADS.items() if h.distillation is not None]
            return out + [f"teacher: head {self.head!r} cannot learn from a teacher's predictions; heads that can: {', '.join(accepting)}"]
        try:
            folder = Path(paths.resolve(self.teacher)).expanduser()
        except Problem as p:
            return out + [f"teacher: {p}"]
        if not folder.is_dir():
            return out + [f"teacher: {self.teacher!r} is not a folder; give the output_dir of a finished run"]
        if not (folder / "recipe.yaml").is_file() or not (folder / FINISHED_MARKER).is_file():
            return out + [f"teacher: {self.teacher!r} holds no finished run (no recipe.yaml or {FINISHED_MARKER}); train the teacher first"]
        state = saved_state(folder)
        if head is not None and state is not None and state.head != self.head:
            out.append(f"teacher: {self.teacher!r} is a {state.head!r} run; this recipe trains head {self.head!r}; the two must be the same head")
        return out

    def path_problems(self) -> list[str]:
        if not self.name_or_path:
            return ["name_or_path: required (a Hub id, a local folder, or package:NAME/path)"]
        try:
            local = paths.resolve(self.name_or_path)
        except Problem as p:
            return [f"name_or_path: {p}"]
        if paths.looks_local(self.name_or_path) and not Path(local).expanduser().is_dir():
            return [f"name_or_path: {self.name_or_path!r} is not a folder"]
        return []

    @property
    def path(self) -> str:
        return str(Path(paths.resolve(self.name_or_path)).expanduser()) if paths.looks_local(self.name_or_path) else self.name_or_path
