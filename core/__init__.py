"""Jakiro explorer engine: speculative decoding with MoE (Jakiro) and dense (EAGLE-2) tree drafters."""
