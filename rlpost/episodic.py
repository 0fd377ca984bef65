"""Memory-R+'s episodic memories and their two intrinsic rewards (research notes §8), as pure logic.

A memory maps keys (question embeddings) to FIFO lists of values (embeddings of extracted reasoning). Two memories
run side by side:
- exploit: a completion whose answer is right is inserted first; its reward is 1 - s, where s is the distance of
  its reasoning to the centroid of the values stored under the k nearest questions, min-max normalised over the
  last `history` distances (the raw distance while they are all equal);
- explore: a completion whose answer is wrong is inserted first; its reward is s, the novelty 1 - (largest cosine
  similarity to the failed values stored under the k nearest questions), min-max normalised over the last
  `history` novelties (0 while they are all equal), and 0 until the memory holds `explore_phase` keys.
Insertion: if the nearest stored key is the same question, the value joins its list (at most `max_values`, oldest
dropped); else the question becomes a new key (at most `max_keys`, oldest key dropped).

Embedders: hashed character n-grams (offline, no download, exactly reproducible) or a sentence-transformers model
by name (the paper's all-MiniLM-L6-v2). Nearest neighbours by exact L2 search, in numpy or, when installed, faiss'
IndexFlatL2: the same neighbours (ties go to the older key in both).
Deviation from the paper's code: each completion's own question is its key (the code keys every completion of a
call by the batch's first question, a quirk when a call holds several questions).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Embedder(Protocol):
    def __call__(self, texts: list[str]) -> np.ndarray: ...


class HashedNgrams:
    """Character n-grams (n = 1..3, with boundary marks) hashed into `dim` signed buckets, L2-normalised: similar
    strings get similar vectors, with no model and no download. The empty string maps to zeros."""

    def __init__(self, dim: int = 256, max_n: int = 3) -> None:
        self.dim, self.max_n = dim, max_n

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            if not text:
                continue
            padded = f"\x02{text}\x03"
            for n in range(1, self.max_n + 1):
                for i in range(len(padded) - n + 1):
                    digest = hashlib.blake2b(padded[i:i + n].encode(), digest_size=8).digest()
                    value = int.from_bytes(digest, "little")
                    out[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


class SentenceEmbedder:
    """A sentence-transformers model by name (downloaded or cached by that library)."""

    def __init__(self, name: str) -> None:
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]  # optional

        self.model = SentenceTransformer(name, device="cpu")

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, convert_to_numpy=True), dtype=np.float64)


def make_embedder(spec: str) -> Embedder:
    """'hashed' (or 'hashed:<dim>') for hashed n-grams, anything else a sentence-transformers model name."""
    if spec == "hashed" or spec.startswith("hashed:"):
        return HashedNgrams(int(spec.split(":", 1)[1]) if ":" in spec else 256)
    return SentenceEmbedder(spec)


def nearest(keys: np.ndarray, query: np.ndarray, k: int, use_faiss: bool | None = None) -> list[int]:
    """Indices of the `k` keys nearest to `query` by L2 distance, nearest first, ties to the lower index."""
    if len(keys) == 0:
        return []
    k = min(k, len(keys))
    if use_faiss is None:
        use_faiss = _faiss() is not None
    if use_faiss:
        faiss = _faiss()
        index = faiss.IndexFlatL2(keys.shape[1])
        index.add(np.ascontiguousarray(keys, dtype=np.float32))
        _, found = index.search(np.ascontiguousarray(query[None, :], dtype=np.float32), k)
        return [int(i) for i in found[0]]
    distances = ((keys - query[None, :]) ** 2).sum(1)
    return [int(i) for i in np.argsort(distances, kind="stable")[:k]]


def _faiss() -> Any:
    try:
        import faiss  # type: ignore[import-not-found,unused-ignore]  # optional (the memory extra)
    except ImportError:
        return None
    return faiss


class EpisodicMemory:
    """Question keys and FIFO lists of reasoning values, both held as text and embedding."""

    def __init__(self, max_keys: int, max_values: int) -> None:
        self.max_keys, self.max_values = max_keys, max_values
        self.keys: list[str] = []
        self.key_vectors: list[np.ndarray] = []
        self.values: list[deque[tuple[str, np.ndarray]]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def insert(self, key: str, key_vector: np.ndarray, value: str, value_vector: np.ndarray) -> None:
        """Add a value under `key`: to its list when the nearest stored key is the same question, else as a new key."""
        found = nearest(np.array(self.key_vectors), key_vector, 1) if self.keys else []
        if found and self.keys[found[0]] == key:
            self.values[found[0]].append((value, value_vector))
            return
        self.keys.append(key)
        self.key_vectors.append(key_vector)
        self.values.append(deque([(value, value_vector)], maxlen=self.max_values))
        if len(self.keys) > self.max_keys:
            del self.keys[0], self.key_vectors[0], self.values[0]

    def retrieve(self, key_vector: np.ndarray, k: int) -> list[np.ndarray]:
        """The value embeddings stored under the `k` keys nearest to `key_vector`."""
        found = nearest(np.array(self.key_vectors), key_vector, k) if self.keys else []
        return [vector for i in found for _, vector in self.values[i]]

    def state_dict(self) -> dict[str, Any]:
        """Texts only, in insertion order: embeddings are recomputed on load (the embedders are deterministic)."""
        return {"keys": list(self.keys), "values": [[text for text, _ in v] for v in self.values]}

    def load_state_dict(self, state: dict[str, Any], embed: Embedder) -> None:
        self.keys = list(state["keys"])
        self.key_vectors = list(embed(self.keys)) if self.keys else []
        self.values = []
        for texts in state["values"]:
            vectors: list[np.ndarray] = list(embed(list(texts))) if texts else []
            self.values.append(deque(zip(texts, vectors), maxlen=self.max_values))


class MinMaxHistory:
    """The last `size` raw scores; `normalise(x)` adds x and maps it to [0, 1] by their min and max."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def normalise(self, value: float, when_flat: float | None) -> float:
        """(x - min) / (max - min) over the history including x; `when_flat` (None: x itself) when max = min."""
        self.values.append(value)
        low, high = min(self.values), max(self.values)
        if high == low:
            return value if when_flat is None else when_flat
        return (value - low) / (high - low)


def centroid_distance(vector: np.ndarray, values: list[np.ndarray]) -> float:
    """L2 distance of `vector` to the mean of `values`."""
    return float(np.linalg.norm(vector - np.mean(np.stack(values), axis=0)))


def cosine_novelty(vector: np.ndarray, values: list[np.ndarray]) -> float:
    """1 - the largest cosine similarity of `vector` to any of `values` (a zero vector has similarity 0)."""
    norms = np.linalg.norm(np.stack(values), axis=1) * np.linalg.norm(vector)
    dots = np.stack(values) @ vector
    sims = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return 1.0 - float(np.max(sims))


@dataclass(frozen=True)
class MemorySettings:
    """Memory-R+'s knobs, the paper's defaults (memoryr+: both memories 10000 keys x 100 values, k = 1)."""

    k: int = 1
    max_keys: int = 10_000
    max_values: int = 100
    history: int = 100
    explore_phase: int = 500
    anneal: float = 1.0


class MemoryRewards:
    """Both memories and their histories; `score` gives each completion its (exploit, explore) rewards, in order."""

    def __init__(self, settings: MemorySettings, embed: Embedder) -> None:
        self.settings, self.embed = settings, embed
        self.exploit = EpisodicMemory(settings.max_keys, settings.max_values)
        self.explore = EpisodicMemory(settings.max_keys, settings.max_values)
        self.exploit_history = MinMaxHistory(settings.history)
        self.explore_history = MinMaxHistory(settings.history)

    def score(self, questions: list[str], reasonings: list[str], correct: list[bool]) -> list[tuple[float, float]]:
        """Insert then score each completion in turn (a completion's own insertion counts for it, as in the paper)."""
        if not questions:
            return []
        keys, values = self.embed(list(questions)), self.embed(list(reasonings))
        exploit = [self._exploit(q, kv, r, v, ok) for q, kv, r, v, ok in zip(questions, keys, reasonings, values,
                                                                             correct)]
        explore = [self._explore(q, kv, r, v, ok) for q, kv, r, v, ok in zip(questions, keys, reasonings, values,
                                                                             correct)]
        return list(zip(exploit, explore))

    def _exploit(self, question: str, key: np.ndarray, text: str, vector: np.ndarray, correct: bool) -> float:
        if correct:
            self.exploit.insert(question, key, text, vector)
        stored = self.exploit.retrieve(key, self.settings.k)
        if not stored:
            return 0.0
        return 1.0 - self.exploit_history.normalise(centroid_distance(vector, stored), when_flat=None)

    def _explore(self, question: str, key: np.ndarray, text: str, vector: np.ndarray, correct: bool) -> float:
        if not correct:
            self.explore.insert(question, key, text, vector)
        if len(self.explore) < self.settings.explore_phase:
            return 0.0
        stored = self.explore.retrieve(key, self.settings.k)
        if not stored:
            return 0.0
        return self.settings.anneal * self.explore_history.normalise(cosine_novelty(vector, stored), when_flat=0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"exploit": self.exploit.state_dict(), "explore": self.explore.state_dict(),
                "exploit_history": list(self.exploit_history.values),
                "explore_history": list(self.explore_history.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exploit.load_state_dict(state["exploit"], self.embed)
        self.explore.load_state_dict(state["explore"], self.embed)
        self.exploit_history.values.extend(state["exploit_history"])
        self.explore_history.values.extend(state["explore_history"])


def extract(completion: str, mode: str) -> str:
    """The reasoning Memory-R+ stores for a completion: 'trace' the text before the last '#' (the whole completion
    without one), 'tag' the inside of the first <reasoning>...</reasoning> or <think>...</think> (empty without
    one; the paper's code reads <reasoning>), 'all' the completion."""
    if mode == "trace":
        return completion.rsplit("#", 1)[0] if "#" in completion else completion
    if mode == "tag":
        for tag in ("reasoning", "think"):
            found = re.search(rf"<{tag}>(.*?)</{tag}>", completion, re.DOTALL)
            if found:
                return found.group(1).strip()
        return ""
    if mode == "all":
        return completion
    raise ValueError(f"memory.extract: unknown mode {mode!r}; choose trace, tag or all")
