"""The commands of run.py beside training: predict, evaluate, compare, export, serve, sweep, cv, and the LoRA merge."""
