"""Ray actors of rlpost (vLLM rollout, DeepSpeed learner, reward workers), placement and weight sync."""
