"""`model.head_config`: a pooled encoder with a small feed-forward head of the recipe's shape.

The model is our own `PreTrainedModel` subclass. Its config holds the encoder's config and the head's
shape, so `save_pretrained` writes one folder that `EncoderWithHead.from_pretrained` (or, once
`recipekit.heads` is imported, `AutoModelForSequenceClassification.from_pretrained`) rebuilds exactly.
Plain `transformers.pipeline` cannot load it without this package; the default heads need nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ["cls", "mean", "max"]
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class HeadConfig:
    """The recipe's `model.head_config` keys."""

    pooling: str = field(default="cls", metadata={"help": "text vector: first token (cls), mean or max over real tokens", "choices": POOLINGS})
    hidden_sizes: list[int] = field(default_factory=list, metadata={"help": "widths of hidden layers between pooling and output; [] = linear"})
    activation: str = field(default="gelu", metadata={"help": "activation after each hidden layer", "choices": list(ACTIVATIONS)})
    dropout: float = field(default=0.1, metadata={"help": "dropout before every linear layer of the head"})
    freeze_encoder: bool = field(default=False, metadata={"help": "train only the head (the encoder gets no gradient)"})
    freeze_layers: int = field(default=0, metadata={"help": "freeze the embeddings and the first k encoder layers"})

    def problems(self) -> list[str]:
        out = []
        if any(h <= 0 for h in self.hidden_sizes):
            out.append(f"hidden_sizes: {self.hidden_sizes} must all be positive")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"dropout: {self.dropout} must be in [0, 1)")
        if self.freeze_layers < 0:
            out.append(f"freeze_layers: {self.freeze_layers} must be 0 or more")
        if self.freeze_encoder and self.freeze_layers:
            out.append("freeze_layers: freeze_encoder already freezes every layer; set one or the other")
        return out


class EncoderWithHeadConfig(PretrainedConfig):
    model_type = "recipekit_encoder_with_head"

    def __init__(self, encoder: dict | None = None, head: dict | None = None, **kwargs):
        self.encoder = encoder or {}
        self.head = head or {}
        super().__init__(**kwargs)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(batch, tokens, width) -> (batch, width); padding never counts toward mean or max."""
    if how == "cls":
        return hidden[:, 0]
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values


def encoder_layers(encoder: nn.Module, count: int) -> nn.ModuleList | None:
    """The encoder's stack of `count` layers (BERT's encoder.layer, RoBERTa's, DeBERTa's ...), found by shape."""
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    return None


class EncoderWithHead(PreTrainedModel):
    config_class = EncoderWithHeadConfig
    base_model_prefix = "encoder"

    def __init__(self, config: EncoderWithHeadConfig):
        super().__init__(config)
        head = HeadConfig(**config.head)
        encoder_config = AutoConfig.for_model(**config.encoder)
        self.encoder = AutoModel.from_config(encoder_config)
        layers, width = [], encoder_config.hidden_size
        for size in head.hidden_sizes:
            layers += [nn.Dropout(head.dropout), nn.Linear(width, size), ACTIVATIONS[head.activation]()]
            width = size
        layers += [nn.Dropout(head.dropout), nn.Linear(width, config.num_labels)]
        self.head = nn.Sequential(*layers)
        self.pooling = head.pooling
        self.post_init()
        self.freeze(head)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and not any(module is m for m in self.encoder.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def freeze(self, head: HeadConfig) -> None:
        if head.freeze_encoder:
            self.encoder.requires_grad_(False)
        elif head.freeze_layers:
            count = self.encoder.config.num_hidden_layers
            stack = encoder_layers(self.encoder, count)
            if stack is None or head.freeze_layers > count:
                raise ValueError(f"freeze_layers={head.freeze_layers}: the encoder has {count} layers")
            self.encoder.get_input_embeddings().requires_grad_(False)
            for name, module in self.encoder.named_children():
                if "embed" in name:
                    module.requires_grad_(False)
            for layer in stack[: head.freeze_layers]:
                layer.requires_grad_(False)

    @classmethod
    def from_encoder(cls, path: str, head: HeadConfig, num_labels: int, load_kwargs: dict, **config_kwargs):
        """A new head on a pretrained encoder: the encoder's weights are loaded, the head's are drawn."""
        encoder = AutoModel.from_pretrained(path, **load_kwargs)
        config = EncoderWithHeadConfig(
            encoder=encoder.config.to_dict(), head=head.__dict__.copy(), num_labels=num_labels, **config_kwargs
        )
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        model.freeze(head)
        return model

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces the parameters, and with them the requires_grad flags set in __init__.
        model = super().from_pretrained(*args, **kwargs)
        model.freeze(HeadConfig(**model.config.head))
        return model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        # `labels` is in the signature so Trainer keeps the column; the loss is the head's (heads.py).
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(pool(hidden, attention_mask, self.pooling)))


AutoConfig.register(EncoderWithHeadConfig.model_type, EncoderWithHeadConfig)
AutoModelForSequenceClassification.register(EncoderWithHeadConfig, EncoderWithHead)
