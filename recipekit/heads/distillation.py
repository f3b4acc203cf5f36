"""Knowledge distillation (`model.teacher`): the loss that takes a teacher's logits.

The teacher's logits for every training row are a column of the tokenized training split (`teacher_logits`,
added by training/teacher.py). The Trainer's TeacherColumn part (trainer/teacher.py) keeps that column in training
batches (Trainer drops columns the model's forward does not name) and hands each batch's rows to `DistillationLoss`,
never to the model. The loss is (1 - weight) x the head's own loss on the gold labels + weight x the head's teacher term
(Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"); both are item sums divided by Trainer's
`num_items_in_batch`, so length-split chunks and gradient accumulation still give the whole batch's gradient.
Evaluation batches carry no teacher column: validation loss is the head's own, comparable with any run's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import reduce

# model.teacher_temperature's default: Hinton et al. found 2-5 best; higher flattens the teacher towards uniform.
DEFAULT_TEMPERATURE = 2.0


def softmax_kl(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between the distributions softened by the temperature, per row, times T^2: the
    gradient of a softened term shrinks as 1 / T^2, so this keeps its share of the mix as T changes (Hinton et al.)."""
    student = F.log_softmax(logits / temperature, dim=-1)
    target = F.log_softmax(teacher.to(logits.dtype) / temperature, dim=-1)
    return F.kl_div(student, target, log_target=True, reduction="none").sum(dim=-1) * temperature**2


def sigmoid_kl(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per output, BCE of the softened student logit against sigmoid(teacher / T), times T^2, less the teacher's own
    entropy: the same gradient as the BCE, and 0 where the student equals the teacher (a Bernoulli KL)."""
    teacher = teacher.to(logits.dtype) / temperature
    target = torch.sigmoid(teacher)
    student = F.binary_cross_entropy_with_logits(logits / temperature, target, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(teacher, target, reduction="none")
    return (student - entropy) * temperature**2


class DistillationLoss:
    """A Trainer `compute_loss_func`: the head's loss mixed with its teacher term for the batch's teacher logits."""

    def __init__(self, gold, term, temperature: float, weight: float):
        self.gold = gold  # the head's own compute_loss_func
        self.term = term  # the head's teacher_term
        self.temperature = temperature
        self.weight = weight
        # This batch's teacher rows: Trainer calls a compute_loss_func with (outputs, labels, count) only, so the
        # trainer's TeacherColumn part sets them here just before and the call takes them (None: an evaluation batch).
        self.teacher_logits = None

    def __call__(self, outputs, labels, num_items_in_batch=None):
        teacher, self.teacher_logits = self.teacher_logits, None
        loss = self.gold(outputs, labels, num_items_in_batch)
        if teacher is None or self.weight == 0:
            return loss
        term = reduce(self.term(outputs["logits"], teacher, self.temperature), num_items_in_batch)
        return (1 - self.weight) * loss + self.weight * term
