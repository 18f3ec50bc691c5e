"""Drafter training: prompts from real text, self-distilled answers, target features, the training loop."""
