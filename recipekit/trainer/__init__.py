"""The one Trainer class (trainer.py) and its parts: length-split batches, window pooling, the evaluation
cache, the teacher's column, loss scaling, a custom schedule."""
