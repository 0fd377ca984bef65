"""rlpost: reinforcement-learning post-training (GRPO) on Ray + vLLM + DeepSpeed.

This package holds the driver side — config, pure math, batching, sampling, the training step — and imports
without Ray, vLLM or DeepSpeed; the actors live in the `actors` package.
"""

__version__ = "0.1.0"
