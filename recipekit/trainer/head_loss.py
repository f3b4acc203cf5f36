"""How Trainer scales the loss of a head whose loss is a batch mean (the model's own) rather than an item sum."""

from __future__ import annotations


class BatchMeanLoss:
    """Trainer part: with `batch_mean_loss` set, Trainer treats the loss as the batch mean it is."""

    def __init__(self, *args, batch_mean_loss: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if batch_mean_loss:
            # The model's forward takes **kwargs, so Trainer assumes its loss is a sum normalised by the item count
            # of the whole step: it would then skip dividing by gradient_accumulation_steps and multiply by the
            # number of processes (a loss of 2 x ln 2 = 1.386 at chance under 2 processes). The loss is a batch mean.
            self.model_accepts_loss_kwargs = False
