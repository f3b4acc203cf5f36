"""LoRA adapters through the `peft` library, for every head: `model.peft:` holds `peft.LoraConfig` keys.

    model:
      peft: {r: 8, lora_alpha: 16, lora_dropout: 0.1}   # target_modules default to peft's choice per model
                                                        # type (BERT: query, value)

The head decides peft's task type, and with it which new modules train in full and are saved with the
adapter (for classification: the `classifier`/`score` layer). A run saves the adapter (a few MB) and its
head state (head_state.json) beside it; `run.py predict` uses it as it is, and
`python run.py merge RUN OUT` merges it into an ordinary model (commands/merge.py).
"""

from __future__ import annotations

from ..core.schema import build_kwargs

# Hugging Face pipeline task of a head -> peft task type.
TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
    "text-generation": "CAUSAL_LM",
    "text2text-generation": "SEQ_2_SEQ_LM",
    "fill-mask": None,  # peft has no masked-LM task type: the adapters train, the LM head as peft sees fit
    "feature-extraction": "FEATURE_EXTRACTION",
}
# Keys the run sets itself: the task from the head, the rest from the model being trained.
RESERVED = ("task_type", "peft_type", "inference_mode", "base_model_name_or_path", "revision")
ADAPTER_CONFIG = "adapter_config.json"


def peft_problems(raw: dict) -> list[str]:
    """Problems with `model.peft`, as `peft.<key>: ...` lines (the caller adds `model.`)."""
    try:
        from peft import LoraConfig
    except ImportError:
        return ["peft: LoRA needs the peft package (pip install peft)"]
    errors: list[str] = []
    for key in RESERVED:
        if key in raw:
            errors.append(f"peft.{key}: set by the run (from model.head and model.name_or_path); leave it out")
    kwargs = build_kwargs(LoraConfig, {k: v for k, v in raw.items() if k not in RESERVED}, "peft", errors, list_valid_keys=False)
    if not errors:
        try:
            LoraConfig(**kwargs)
        except (ValueError, TypeError) as e:
            errors.append(f"peft: {str(e).strip().splitlines()[0]}")
    return errors


def apply_peft(model, model_args, head):
    """Wrap `model` with fresh LoRA adapters when the recipe asks for them; otherwise return it unchanged."""
    if model_args.peft is None:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type=TASK_TYPES.get(head.pipeline_task), **{**head.peft_defaults(model), **model_args.peft})
    return get_peft_model(model, config)


def load_adapter(base_model, folder: str):
    """A saved adapter on its base model, folded into the weights: an ordinary model for inference or saving."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, folder).merge_and_unload()
