"""Models: the architecture registry, tiny models, chat formats, training, LoRA fine-tunes, sampling, pinned weights."""
