"""A finished run as the teacher of a new one (`model.teacher`): checked against the student, then predicted once.

The teacher reads the student's training rows (after the student's data steps) through its own prediction path,
the one `run.py predict` takes: its inference steps, tokenizer, max_length, batch size and model as saved. Its
soft targets (the head's `soft_targets` of those logits) become the `teacher_logits` column of the tokenized
training split, row for row; a row repeated or augmented by a data step is simply one more row. The loss that
reads the column is recipekit/heads/distillation.py. Validation and test splits get no column: they are scored
against gold labels only, as any run's.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core import paths
from ..core.errors import RecipeError
from ..inference.predictor import predict_rows
from ..inference.runs import TrainedRun, clean, open_run
from ..trainer.teacher import TEACHER_COLUMN


def open_teacher(model_args, head, data_args) -> TrainedRun:
    """The teacher run, refused unless it has the same labels and reads as many text columns (recipe validation
    has refused another head already). Called once the student's labels are encoded (`head.labels`) and before
    the run writes anything."""
    spec = model_args.teacher
    try:
        run = open_run(str(Path(paths.resolve(spec)).expanduser()))
    except RecipeError as e:
        raise RecipeError([f"model.teacher: {p}" for p in e.problems]) from None
    if run.labels != head.labels:
        raise RecipeError(
            f"model.teacher: {spec!r} was trained on labels [{', '.join(run.labels)}]; this run's data has "
            f"[{', '.join(head.labels)}]; a teacher needs the same labels in the same order"
        )
    theirs, ours = run.data.text_columns, data_args.text_columns
    if len(theirs) != len(ours):
        raise RecipeError(f"model.teacher: {spec!r} reads {len(theirs)} text column(s) ({', '.join(theirs)}); "
                          f"this recipe has {len(ours)} ({', '.join(ours)})")
    return run


def with_teacher_logits(run: TrainedRun, tokenized, split, text_columns: list[str]):
    """`tokenized` (the training split as the model reads it) with the teacher's soft target for each row.

    `split` is the same rows as text. Every process of a multi-process run calls this together: the teacher's
    Trainer shares the rows among them and gathers the answer, so each process gets every row's logits.
    """
    started = time.time()
    # The student's text columns under the names the teacher's recipe reads them by.
    view = split.select_columns(text_columns).rename_columns(dict(zip(text_columns, run.data.text_columns)))
    view = clean(view, run)
    _, prediction = next(predict_rows(run, view, None, len(view), with_gold=False))
    targets = run.head.soft_targets(prediction.output.predictions)
    if len(targets) != len(tokenized):  # both come from the same rows; a mismatch would misalign every target
        raise RecipeError(f"model.teacher: {len(targets)} teacher predictions for {len(tokenized)} training rows")
    print(f"teacher: {run.folder} predicted {len(targets):,} training rows in {time.time() - started:.1f} s")
    return tokenized.add_column(TEACHER_COLUMN, targets.tolist())
