"""The embedded default: a synthetic verifiable task suite and a tiny character-level Llama base model.

Nothing here downloads; everything is generated from fixed seeds so a fresh clone can train at once.
"""
