"""`model.head_config`: custom pooled heads, a pooled encoder with a small feed-forward head of the recipe's shape.

It serves every pooled head (sequence_classification, binary, multi_label, regression, pairs). The model
is our own `PreTrainedModel` subclass. Its config holds the encoder's config and the head's shape, so
`save_pretrained` writes one folder that `EncoderWithHead.from_pretrained` (or, once `recipekit.heads` is
imported, `AutoModelForSequenceClassification.from_pretrained` and `pipeline`) rebuilds exactly. Plain
transformers cannot load it without this package; the default heads need nothing. Freezing encoder layers
is `regularization.freeze_layers`, for every head.
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

    def problems(self) -> list[str]:
        out = []
        if any(h <= 0 for h in self.hidden_sizes):
            out.append(f"hidden_sizes: {self.hidden_sizes} must all be positive")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"dropout: {self.dropout} must be in [0, 1)")
        return out


def head_config_of(config) -> HeadConfig:
    # Keys this version no longer has (freeze_layers became regularization.freeze_layers) are left out.
    return HeadConfig(**{k: v for k, v in config.head.items() if k in HeadConfig.__dataclass_fields__})


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


class EncoderWithHead(PreTrainedModel):
    config_class = EncoderWithHeadConfig
    base_model_prefix = "encoder"

    def __init__(self, config: EncoderWithHeadConfig):
        super().__init__(config)
        head = head_config_of(config)
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

    @classmethod
    def on_encoder(cls, encoder: PreTrainedModel, head: HeadConfig, num_labels: int, **config_kwargs):
        """A new head on an encoder (pretrained, or new from a config): the encoder's weights are kept, the head's drawn."""
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
        model.freeze(head_config_of(model.config))
        return model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        # `labels` is in the signature so Trainer keeps the column; the loss is the head's.
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return SequenceClassifierOutput(logits=self.head(pool(hidden, attention_mask, self.pooling)))


AutoConfig.register(EncoderWithHeadConfig.model_type, EncoderWithHeadConfig)
AutoModelForSequenceClassification.register(EncoderWithHeadConfig, EncoderWithHead)
