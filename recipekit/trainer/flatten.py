"""Flattened batches (`batching.padding: flatten`): the encoder computes no padded position.

A padded batch of texts is `[texts, longest]`; the encoder instead reads one row of all the texts' real
tokens, `[1, tokens]`, with position ids restarting at each text, and attends only inside each text
(`attend_per_text`, an attention function of ours registered with transformers' AttentionInterface, which
reads the texts' boundaries `cu_seq_lens_q` as the library's varlen kernels do). Its hidden states are then
put back on the `[texts, longest]` grid, zeros at the padding, so the model's own head pools them as it
pools a padded batch: the first token (BERT's pooler, RoBERTa's and DistilBERT's classifier), the last
real one (GPT-2), a masked mean or max (our custom head). The pooled head reads one position per text (or a
masked sum), so the layers, where the time goes, compute real tokens only.

Nothing changes outside the model call: the collator still pads (the head, the loss, the metrics and the
Trainer's counting see the padded batch); hooks on the model take the padded inputs apart just before the
encoder and put its output back together just after it. A model family whose encoder does not take
`position_ids` and attention kwargs through to an AttentionInterface function gives other logits flattened;
`FlatForward.install` tries each model once on two made-up texts and refuses it then.
"""

from __future__ import annotations

import inspect
import itertools

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel

ATTENTION = "recipekit_per_text"


def attend_per_text(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """Attention inside each text of a flattened row: query/key/value are [1, heads, tokens, head size] and
    `cu_seq_lens_q` the texts' boundaries; one SDPA call per text. Measured against gathering the texts onto a
    padded [texts, heads, longest, size] grid for one masked call (MiniLM's shapes, 32 SST-2-like texts, forward and
    backward, 1 thread): 26-38 ms per layer for the calls per text, 40-49 ms for the grid, whose gather and
    scatter cost more than the calls do."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        raise RuntimeError(f"{ATTENTION}: called without cu_seq_lens_q; only flattened batches use it")
    is_causal = getattr(module, "is_causal", False) if is_causal is None else is_causal
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key head serves several query heads
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    cuts = bounds.tolist()
    out = torch.cat([
        F.scaled_dot_product_attention(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, is_causal=is_causal, scale=scaling)
        for a, b in itertools.pairwise(cuts)
    ], dim=2)
    # [1, tokens, heads, size]: the layout transformers' attention functions return.
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attend_per_text)


def position_start(encoder) -> int:
    """The position id of a text's first token: 0, or padding_idx + 1 where the position embeddings reserve a padding
    row (RoBERTa, XLM-R, CamemBERT, MPNet count positions from there)."""
    positions = getattr(getattr(encoder, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(positions, "padding_idx", None)
    return padding_idx + 1 if isinstance(padding_idx, int) else 0


def vocabulary_size(config) -> int:
    size = getattr(config, "vocab_size", None)
    if size is None and isinstance(getattr(config, "encoder", None), dict):  # our custom head's config holds its encoder's
        size = config.encoder.get("vocab_size")
    return int(size or 100)


def flat_inputs(attention_mask: torch.Tensor, input_ids, token_type_ids, start: int) -> dict:
    """The encoder's inputs for the padded batch's real tokens as one row (right or left padding alike)."""
    real = attention_mask.bool()
    lengths = real.sum(dim=1)
    bounds = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    positions = (real.cumsum(dim=1) - 1 + start)[real]
    longest = int(lengths.max())
    inputs = {
        "input_ids": input_ids[real].unsqueeze(0),
        "position_ids": positions.unsqueeze(0),
        "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest,
    }
    if token_type_ids is not None:
        inputs["token_type_ids"] = token_type_ids[real].unsqueeze(0)
    return inputs


class FlatForward:
    """Hooks that run a model's encoder flattened (see the module docstring) while `active`."""

    def __init__(self, outer, model: PreTrainedModel):
        self.model = model
        self.encoder = model.base_model
        self.signature = inspect.signature(self.encoder.forward)
        self.var_keyword = next((p.name for p in self.signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
        self.flattened = 0  # encoder calls run flattened, for the probe
        self.start = position_start(self.encoder)
        self.active = True
        self.mask = None  # the padded batch's attention mask, between the model's call and its encoder's
        self.padded = None  # the same mask, between the encoder's call and its output
        self.saved_attention = None
        self.handles = [
            # On what Trainer calls (a peft model calls its transformers model's forward directly, past its hooks).
            outer.register_forward_pre_hook(self.before_model, with_kwargs=True),
            self.encoder.register_forward_pre_hook(self.before_encoder, with_kwargs=True),
            self.encoder.register_forward_hook(self.after_encoder, always_call=True),
            outer.register_forward_hook(self.after_model, always_call=True),
        ]

    @classmethod
    def install(cls, model) -> tuple[FlatForward | None, str]:
        """(hooks on `model`'s transformers model, ""), or (None, why it cannot run flattened) after trying two texts."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model: its transformers model
        if not isinstance(inner, PreTrainedModel) or inner.base_model is inner:
            return None, f"{type(inner).__name__} has no separate encoder to flatten"
        hooks = cls(model, inner)
        why = hooks.probe(model)
        if why:
            hooks.remove()
            return None, why
        return hooks, ""

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def before_model(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if self.active and not args and isinstance(mask, torch.Tensor) and mask.dim() == 2 and isinstance(kwargs.get("input_ids"), torch.Tensor):
            self.mask = mask

    def after_model(self, module, args, kwargs_or_output, output=None):
        self.mask = None

    def before_encoder(self, module, args, kwargs):
        if self.mask is None or not self.var_keyword:  # without **kwargs no way to hand the boundaries to the attention
            self.mask = None
            return None
        bound = dict(self.signature.bind_partial(*args, **kwargs).arguments)
        extra = bound.pop(self.var_keyword, {})
        if bound.get("inputs_embeds") is not None or bound.get("position_ids") is not None:
            self.mask = None  # a caller's own embeddings or positions: left as given
            return None
        mask, self.mask = self.mask, None
        flat = flat_inputs(mask, bound["input_ids"], bound.get("token_type_ids"), self.start)
        bound.update(extra)
        bound.update(flat, attention_mask=None)
        self.padded = mask
        self.flattened += 1
        self.saved_attention = self.encoder.config._attn_implementation
        self.encoder.config._attn_implementation = ATTENTION
        return (), bound

    def after_encoder(self, module, args, output):
        mask, self.padded = self.padded, None
        if mask is None:
            return None
        self.encoder.config._attn_implementation = self.saved_attention
        if output is None or getattr(output, "last_hidden_state", None) is None:
            return None
        flat = output.last_hidden_state[0]
        real = mask.bool()
        hidden = flat.new_zeros(*real.shape, flat.shape[-1])
        hidden[real] = flat
        output.last_hidden_state = hidden
        pooler = getattr(module, "pooler", None)
        if getattr(output, "pooler_output", None) is not None and pooler is not None:
            output.pooler_output = pooler(hidden)
        return output

    def probe(self, model) -> str:
        """Why the model's logits differ flattened ("" when they agree): two made-up texts of 3 and 7 tokens."""
        config = self.model.config
        vocab = vocabulary_size(config)
        device = next(self.model.parameters()).device
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(5, max(vocab, 6), (2, 7), generator=generator).to(device)
        mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1] * 7], device=device)
        pad = getattr(config, "pad_token_id", None)
        if isinstance(pad, int):
            ids = ids.masked_fill(mask == 0, pad)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.active = False
                padded = model(input_ids=ids, attention_mask=mask).logits.float()
                self.active = True
                flat = model(input_ids=ids, attention_mask=mask).logits.float()
        except Exception as error:  # noqa: BLE001 - any family's refusal is the fallback's reason, not the run's end
            return f"{type(self.model).__name__} fails flattened ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        finally:
            self.active = True
            model.train(training)
        if not self.flattened:
            return f"{type(self.model).__name__}'s encoder takes no attention keywords to flatten with"
        tolerance = 1e-4 if next(self.model.parameters()).dtype == torch.float32 else 3e-2
        gap = float((padded - flat).abs().max())
        if not gap <= tolerance * max(1.0, float(padded.abs().max())):
            return f"{type(self.model).__name__} gives other logits flattened (largest difference {gap:.2g} on a probe)"
        return ""


SAID: set[str] = set()  # the fallbacks' reasons printed so far


def recomputing(args, accelerator=None) -> str:
    """The setting whose backward pass recomputes the encoder's layers (activation checkpointing), or "": the
    Trainer's own, or FSDP's (`training.fsdp_config`, or the accelerate config's, read from the accelerator)."""
    if getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False):
        return "training.gradient_checkpointing"
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    if (getattr(args, "fsdp_plugin_args", None) or {}).get("activation_checkpointing") or getattr(plugin, "activation_checkpointing", False):
        return "FSDP's activation_checkpointing"
    return ""


def resolve_padding(setting: str, args, cost: int | None = None) -> str:
    """`batching.padding` as run: auto is flatten on the CPU (bench/bench_speed.py, docs/scaling.md); elsewhere the length
    split where `cost` (the resolved length_split_cost) is set, else dynamic, since auto's cost leaves GPU batches whole:
    flattened attention on a GPU is not measured yet."""
    if setting != "auto":
        return setting
    if args.use_cpu or not torch.cuda.is_available():
        return "flatten"
    return "length_split" if cost is not None else "dynamic"


class Flattening:
    """Trainer part: with `flatten` set, the model runs every batch flattened (training, evaluation, prediction); a
    model that cannot falls back to the length split (`chunk_cost` as given) and says so once. `padding` is the
    path taken: flatten, length_split (chunks at chunk_cost) or dynamic (one padded pass per batch)."""

    def __init__(self, *args, flatten: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.flat = None
        if flatten and self.args.n_gpu > 1:
            # DataParallel runs replicas of the model in threads, which would share the hooks' state.
            why = f"DataParallel over {self.args.n_gpu} GPUs in one process (torchrun, one process per GPU, flattens)"
            self.say(why)
        elif flatten and (key := recomputing(self.args, self.accelerator)):
            # The backward pass recomputes each checkpointed layer on the flattened row it saved, but by then
            # after_encoder has restored the model's own attention implementation, which ignores cu_seq_lens_q and
            # attends across the texts: other gradients under reentrant checkpointing, a CheckpointError otherwise.
            self.say(f"{key} recomputes each layer in the backward pass with the model's own attention, across the flattened texts")
        elif flatten:
            self.flat, why = FlatForward.install(self.model)
            if self.flat is None:
                self.say(why)
        if self.flat is not None:
            self.chunk_cost = None  # nothing left for chunks to save
        self.padding = "flatten" if self.flat is not None else "length_split" if self.chunk_cost else "dynamic"

    def say(self, why: str) -> None:
        # Once per process and reason: the run's prediction Trainer meets the same model again.
        if self.args.process_index == 0 and why not in SAID:
            SAID.add(why)
            cost = f"the length split (chunk cost {self.chunk_cost} tokens)" if self.chunk_cost else "padded batches"
            print(f"batching.padding: flatten: {why}; running {cost} instead")

    def count(self, batch: dict) -> None:
        if self.flat is None:
            return super().count(batch)
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor):
            real = mask.sum()
            self.real_tokens = self.real_tokens + real
            # A flattened encoder computes the real tokens only; kept on the device, as real_tokens is, since int()
            # here would wait for the GPU at every step.
            self.computed_tokens = self.computed_tokens + real
