"""Training a run: the Trainer built from the recipe, regularisation, a teacher's logits, sanity checks, interruption, finishing."""
