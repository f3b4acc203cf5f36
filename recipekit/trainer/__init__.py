"""The Trainer class and what it is made of: length-split batches, window pooling, the evaluation cache, the teacher's column."""
