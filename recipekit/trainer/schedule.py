"""A learning-rate schedule that `training.lr_scheduler_type` cannot name (the learning-rate range test's)."""

from __future__ import annotations


class CustomSchedule:
    """Trainer part: with `schedule` set (optimizer -> LRScheduler), Trainer steps that scheduler instead of the one
    its TrainingArguments name. Made when Trainer makes its optimizer, so it wraps that very optimizer."""

    def __init__(self, *args, schedule=None, **kwargs):
        self.schedule = schedule
        super().__init__(*args, **kwargs)

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.schedule is not None and self.lr_scheduler is None:
            self.lr_scheduler = self.schedule(self.optimizer if optimizer is None else optimizer)
        return super().create_scheduler(num_training_steps, optimizer)
