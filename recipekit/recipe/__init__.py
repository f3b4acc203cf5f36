"""The recipe: one dataclass per section (model, data, training checks, sweep, the small sections), built and validated in build.py."""
