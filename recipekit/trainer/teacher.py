"""The teacher's part of training under `model.teacher`: the teacher's logits travel with the training batch to the loss."""

from __future__ import annotations

# The column of the tokenized training split that holds each row's teacher logits (training/teacher.py adds it).
TEACHER_COLUMN = "teacher_logits"


class TeacherColumn:
    """Trainer part: with `teacher` set, keeps the teacher column in training batches and gives each batch's rows
    to the loss (heads/distillation.py's DistillationLoss), never to the model. Evaluation batches carry no
    teacher column: the loss then gets None and is the head's own."""

    def __init__(self, *args, teacher: bool = False, **kwargs):
        self.teacher = teacher
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        # Trainer keeps only the columns the model's forward names (remove_unused_columns): name the teacher's too.
        super()._set_signature_columns_if_needed()
        if self.teacher and TEACHER_COLUMN not in self._signature_columns:
            self._signature_columns.append(TEACHER_COLUMN)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.teacher:
            # Trainer calls a compute_loss_func with (outputs, labels, count) only: the loss takes the rows from here.
            self.compute_loss_func.teacher_logits = inputs.pop(TEACHER_COLUMN, None)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
