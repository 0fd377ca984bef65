"""Rollout actor: one vLLM engine that samples completions (token ids and sampled logprobs) and takes new weights.

On CPU the engine core runs inside this actor's process (no extra processes on a 2-core box). New weights arrive
by either transport: object-store buckets through `load_weights`, which each vLLM worker streams into an in-place
reload (`WeightLoadExtension`; the other sides in actors/weight_sync.py), or, on GPU, vLLM's native
weight-transfer API, whose methods this actor exposes for the learner to drive (actors/weight_sync_gpu.py). It also
scores given sequences (`sequence_logprobs`) for the driver's learner-vs-vLLM logprob probe.
Leaves out: async/continuous streaming of requests, sleep/wake colocation (GPU follow-up).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from actors.runtime import configure_process_env, has_cuda, injected_fault

configure_process_env()

from rlpost.config import ModelConfig, RolloutConfig
from rlpost.types import GenerationRequest, Sample


def vllm_lora_rank(rank: int) -> int:
    """The smallest LoRA rank vLLM accepts as max_lora_rank that holds `rank`."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)


class WeightLoadExtension:
    """Mixed into vLLM's worker class (worker_extension_cls): reloads weights in place from object-store buckets.

    One reload session streams every bucket, so vLLM's layerwise reload sees the whole model once and re-runs its
    post-load processing; buckets are fetched lazily to bound peak memory.
    """

    def rlpost_reload_weights(self, bucket_refs: list[Any]) -> int:
        import ray

        count = 0

        def stream() -> Iterator[tuple[str, Any]]:
            nonlocal count
            for ref in bucket_refs:
                for name, tensor in ray.get(ref):
                    count += 1
                    yield name, tensor

        self.model_runner.reload_weights(weights_iterator=stream(), is_checkpoint_format=True)  # type: ignore[attr-defined]  # set by vLLM on the worker it extends
        return count


class RolloutWorker:
    """A vLLM engine behind typed methods (wrapped by `ray.remote` in actors/build.py)."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, cfg: RolloutConfig, engine_index: int,
                 weight_transfer: str = "cpu", lora: str = "", adapter_path: str = "") -> None:
        cuda = has_cuda()
        if not cuda:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=model_cfg.dtype, max_model_len=cfg.max_model_len,
            seed=cfg.seed + 1000 * engine_index, enforce_eager=cfg.enforce_eager,
            trust_remote_code=model_cfg.trust_remote_code,
            worker_extension_cls="actors.rollout.WeightLoadExtension",
        )
        if lora == "adapter":  # serve the base with the learner's adapter (load_adapter), never changing the base
            kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(model_cfg.lora_rank), max_loras=2,
                          max_cpu_loras=2)
        if not cuda:
            # A seeded request whose prefill is chunked makes vLLM rewind its sampling generator, which CPU
            # generators cannot do ("CPU Generator does not use offset"): episodes' long continuation prompts hit
            # the batch token cap, so on CPU a prompt is always prefilled whole.
            kwargs["enable_chunked_prefill"] = False
        if cuda:
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization,
                          tensor_parallel_size=cfg.tensor_parallel_size)
            if weight_transfer in ("nccl", "ipc"):
                from vllm.config import WeightTransferConfig

                if weight_transfer == "ipc":  # CUDA IPC handles are not msgpack-native
                    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

                kwargs["weight_transfer_config"] = WeightTransferConfig(backend=weight_transfer)
        self.llm = LLM(**kwargs)
        self.engine_index = engine_index
        self.weight_version = 0  # the learner's policy version of the weights loaded last (0: the start weights)
        self.lora: Any = None  # the LoRARequest of the adapter in use (None: the base alone)
        self.lora_enabled = lora == "adapter"
        if adapter_path:  # `rlpost eval` of a LoRA checkpoint: a saved PEFT adapter on the base
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("checkpoint", 1, adapter_path)

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        """Completions for each request, in request order."""
        injected_fault("rollout.generate")
        from vllm import SamplingParams

        prompts: list[Any] = [{"prompt_token_ids": r.token_ids} for r in requests]  # vLLM's TokensPrompt
        params = [SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                 logprobs=0 if r.temperature > 0 else None, seed=r.seed,
                                 stop=list(r.stop) or None, include_stop_str_in_output=bool(r.stop))
                  for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora)
        groups = []
        for request, output in zip(requests, outputs):
            samples = []
            for completion in output.outputs:
                ids = np.asarray(completion.token_ids, dtype=np.int32)
                steps: Any = completion.logprobs  # one {token: Logprob} per sampled token when asked for
                logprobs = (np.fromiter((step[tok].logprob for tok, step in zip(completion.token_ids, steps)),
                                        dtype=np.float32, count=len(ids)) if steps else np.zeros(len(ids), np.float32))
                text = completion.text
                if request.prefix_len:  # a partial rollout continued: the text of the whole completion so far
                    text = self.llm.get_tokenizer().decode(
                        [*request.token_ids[len(request.token_ids) - request.prefix_len:], *completion.token_ids],
                        skip_special_tokens=True)
                samples.append(Sample(prompt_uid=request.prompt_uid, token_ids=ids, logprobs=logprobs,
                                      text=text, version=self.weight_version,
                                      finish_reason="stop" if completion.finish_reason == "stop" else "length"))
            groups.append(samples)
        return groups

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[float]]:
        """vLLM's logprob of every token after the first (prompt logprobs), for the sync probe (`base`: without the
        LoRA adapter). With LoRA enabled,
        one sequence per call: vLLM 0.32's CPU LoRA logits path fails on prompt logprobs of several prompts at
        once (its sampler indices count prompts, not prompt tokens)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        batches = [[s] for s in sequences] if self.lora_enabled else [sequences]
        outputs = [out for batch in batches for out in self.llm.generate(
            [cast(Any, {"prompt_token_ids": s}) for s in batch], params, use_tqdm=False,
            lora_request=None if base else self.lora)]
        per_sequence: list[Any] = [out.prompt_logprobs for out in outputs]  # None for the first token
        return [[step[tok].logprob for tok, step in zip(seq[1:], steps[1:])]
                for seq, steps in zip(sequences, per_sequence)]

    def load_weights(self, bucket_refs: list[Any], version: int) -> int:
        """CPU transport: reload the model from object-store buckets (the learner's policy `version`), then drop
        KV cache built with old weights."""
        loaded = max(self.llm.collective_rpc("rlpost_reload_weights", args=(bucket_refs,)))
        self.llm.reset_prefix_cache()
        self.weight_version = version
        return loaded

    def load_adapter(self, bucket_refs: list[Any], version: int, config: dict[str, Any]) -> int:
        """LoRA: the learner's adapter of policy `version` (PEFT names and config) written to a local folder and
        loaded into vLLM; later requests use it, the previous adapter is dropped. Returns the tensors loaded."""
        import json
        import shutil
        import tempfile

        import ray
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        tensors = {name: tensor.contiguous() for ref in bucket_refs for name, tensor in ray.get(ref)}
        folder = tempfile.mkdtemp(prefix=f"rlpost-adapter-v{version}-")
        save_file(tensors, f"{folder}/adapter_model.safetensors")
        with open(f"{folder}/adapter_config.json", "w") as out:
            json.dump(config, out)
        request = LoRARequest(f"policy-v{version}", version + 1, folder)
        self.llm.llm_engine.add_lora(request)  # load now: a bad adapter fails the sync, not a later generate
        old, self.lora = self.lora, request
        if old is not None and old.lora_int_id != request.lora_int_id:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)
        self.llm.reset_prefix_cache()
        self.weight_version = version
        return len(tensors)

    def set_weight_version(self, version: int) -> None:
        """GPU transports: the policy version of the weights just transferred (stamped on later samples)."""
        self.weight_version = version

    # vLLM's native weight-transfer protocol (GPU transports): the names match what vLLM's
    # RayVLLMWeightSyncClient calls on a handle, so a learner can drive this actor directly.
    def init_weight_transfer_engine(self, request: Any) -> None:
        self.llm.init_weight_transfer_engine(request)

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, request: Any) -> None:
        self.llm.update_weights(request)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.llm.finish_weight_update(weight_version)
        self.llm.reset_prefix_cache()

    def update_weight_version(self, version: str) -> None:
        self.llm.update_weight_version(version)

    def num_workers(self) -> int:
        return int(self.llm.get_world_size())

    def ping(self) -> int:
        return self.engine_index
