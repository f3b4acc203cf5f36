"""recipekit: YAML recipes for fine-tuning and pretraining language models with Hugging Face Trainer."""

__version__ = "0.1.0"
