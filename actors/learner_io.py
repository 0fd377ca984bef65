"""A learner rank's files: Hugging Face checkpoints (full weights, or a LoRA adapter in PEFT's format and optionally
the merged model) and DeepSpeed state for resume. Mixed into `LearnerWorker` (actors/learner.py), which sets the
attributes declared below."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rlpost.config import ModelConfig


class CheckpointWriter:
    """save_hf / save_state / load_state of one learner rank; every rank calls each (ZeRO-3 gathers)."""

    rank: int
    engine: Any  # a DeepSpeed engine
    model_path: str
    model_cfg: ModelConfig
    version: int

    if TYPE_CHECKING:  # ObjectStoreSender's (actors/weight_sync.py), earlier in LearnerWorker's bases
        def _iter_full_params(self) -> Iterator[tuple[str, Any]]: ...

    def save_hf(self, path: str, merged: bool = False) -> None:
        """Write a Hugging Face checkpoint (weights, config, tokenizer) of the current policy, atomically; with LoRA
        the adapter in PEFT's format (`PeftModel.from_pretrained(base, path)`), and with `merged` also the merged
        model in `path/merged`.

        All ranks gather (ZeRO-3); rank 0 writes into a temporary folder and renames it into place, so a crash
        never leaves a half-written checkpoint at `path`.
        """
        import shutil

        from transformers import AutoTokenizer

        lora = bool(self.model_cfg.lora_rank)
        state = self._lora_state(merged) if lora else {"": dict(self._iter_full_params())}
        if self.rank != 0:
            return
        tmp = f"{path}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.model_cfg.trust_remote_code)
        module = self.engine.module
        if lora:
            module.save_pretrained(tmp, state_dict=state["adapter"], safe_serialization=True)
            if merged:
                module.get_base_model().save_pretrained(os.path.join(tmp, "merged"), state_dict=state["merged"],
                                                        safe_serialization=True)
                tokenizer.save_pretrained(os.path.join(tmp, "merged"))
        else:
            module.save_pretrained(tmp, state_dict=state[""], safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)

    def _lora_state(self, merged: bool) -> dict[str, dict[str, Any]]:
        """The adapter's state (full PEFT names, as save_pretrained filters them) and, when asked, the merged
        weights under 'merged' (every rank gathers)."""
        from actors.lora import gathered, merged_params

        adapter = {}
        for name, param in self.engine.module.named_parameters():
            if "lora_" in name:
                with gathered([param]):
                    adapter[name] = param.detach().to("cpu", copy=True)
        return {"adapter": adapter, **({"merged": dict(merged_params(self.engine.module))} if merged else {})}

    def save_state(self, path: str) -> None:
        """DeepSpeed checkpoint of this rank (weights, optimizer, scheduler, ZeRO partitions) under `path`; a
        collective: every rank calls it."""
        self.engine.save_checkpoint(path, tag="state", save_latest=False, client_state={"version": self.version})

    def load_state(self, path: str) -> None:
        """Restore what save_state wrote (every rank)."""
        loaded, client = self.engine.load_checkpoint(path, tag="state", load_optimizer_states=True,
                                                     load_lr_scheduler_states=True)
        if loaded is None:
            raise RuntimeError(f"learner rank {self.rank}: no DeepSpeed checkpoint under {path}")
        self.version = int((client or {}).get("version", 0))

