"""A dense reward for tests on a random model: exact match almost never fires there, this always varies."""


def digit_fraction(prompts, completions, completion_ids, **columns):
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


def text_parity(prompts, completions, completion_ids, **columns):
    """A pseudo-random 0/1 per distinct completion: nothing to learn, so it keeps groups mixed (advantages live)
    however long the shared test stack has trained, unless the policy collapses to one completion."""
    import hashlib

    return [float(hashlib.blake2b(c.encode(), digest_size=1).digest()[0] % 2) for c in completions]
