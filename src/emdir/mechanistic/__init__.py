"""Mechanistic readings of a fine-tune: rank-1 LoRA probes and SAE decomposition."""
