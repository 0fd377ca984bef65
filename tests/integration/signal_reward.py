"""A dense reward for tests on a random model: exact match almost never fires there, this always varies."""


def digit_fraction(prompts, completions, completion_ids, **columns):
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]
