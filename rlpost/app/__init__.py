"""Entry points: the `rlpost` command line and what its commands run (train, validate, submit, eval).

The only part of `rlpost` that imports `actors` (the Ray, vLLM and DeepSpeed side); the core below it never does.
"""
