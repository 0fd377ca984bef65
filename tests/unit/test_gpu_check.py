"""scripts/gpu_check.py's CPU-side logic: arguments, the check list and its recipe overrides, the runner with fake
commands that pass, fail, time out or are skipped, the judges of what a run left, the table and the JSON; and
scripts/_gpu_check_box.py's wheels: splitting into parts, joining and checking them, what gets installed, and a
real offline `pip install --target` of a tiny wheel. Nothing here needs a GPU, vLLM, Ray or the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import _gpu_check_box as box  # noqa: E402
import gpu_check as gc  # noqa: E402

PY = sys.executable


def _check(name: str, code: str, timeout_s: float = 30.0, **kwargs) -> gc.Check:
    return gc.Check(name, f"fake {name}", (PY, "-c", code), timeout_s, gc.judge_exit, **kwargs)


def _run(checks, tmp_path, gpus=1, budget_s=60.0, **kwargs):
    return gc.run_checks(checks, gpus, budget_s, tmp_path / "logs", tmp_path / "work", dict(os.environ), **kwargs)


# ---------------------------------------------------------------- arguments and the check list

def test_arguments_defaults_and_lists():
    args = gc.parse_args(["all"])
    assert (args.budget, args.probe_tol, args.only, args.skip) == (560.0, 0.5, (), ())
    assert args.wheels == gc.WHEELS and args.site == gc.SITE
    args = gc.parse_args(["run", "--only", "env, sync-ipc", "--skip", "bench", "--budget", "120"])
    assert (args.only, args.skip, args.budget) == (("env", "sync-ipc"), ("bench",), 120.0)
    stage = gc.parse_args(["stage"])
    assert (stage.python_version, stage.glibc, stage.part_mb) == ("3.12", 31, 60.0)


@pytest.mark.parametrize("argv", [[], ["all", "--budget", "0"], ["stage", "--part-mb", "-1"], ["probe", "nope"],
                                  ["frobnicate"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        gc.parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_check_list_order_gpus_and_selection(tmp_path):
    checks = gc.build_checks(1, tmp_path / "work", tmp_path / "out", 0.05, tmp_path / "wheels", tmp_path / "site")
    names = [c.name for c in checks]
    assert names == ["install", "env", "vllm-api", "vllm-generate", "learner-zero2", "learner-zero3", "sync-ipc",
                     "sync-nccl", "rejoin-ipc", "rejoin-nccl", "lora", "lora-merged", "qlora", "quickstart", "async",
                     "bench"]
    assert len(set(names)) == len(names)
    by_name = {c.name: c for c in checks}
    assert [n for n, c in by_name.items() if c.gpus == 2] == ["sync-nccl", "rejoin-nccl"]
    assert by_name["install"].gpus == 0 and by_name["env"].gpus == 0  # env runs anyway: it fails without a GPU
    assert {c.name: c.needs for c in checks if c.needs} == {"rejoin-ipc": ("sync-ipc",), "rejoin-nccl": ("sync-nccl",)}
    assert by_name["rejoin-ipc"].env["RLPOST_INJECT_FAULT"] == "rollout.generate:exit@3"
    assert [c.name for c in gc.select(checks, ("env", "bench"), ())] == ["env", "bench"]
    assert "install" not in [c.name for c in gc.select(checks, (), ("install",))]
    with pytest.raises(SystemExit, match="unknown check.*sync-tcp"):
        gc.select(checks, ("sync-tcp",), ())


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_every_training_check_is_a_valid_recipe(gpus, tmp_path):
    """The overrides each training check passes load and validate through rlpost's own recipe loader, and say
    what the check is about (key names and values match rlpost/config.py and rlpost/choices.py)."""
    from rlpost.recipes import load_config

    checks = gc.build_checks(gpus, tmp_path / "work", tmp_path / "out", 0.05, tmp_path / "w", tmp_path / "s")
    trains = {c.name: c for c in checks if c.argv[1:4] == ("-m", "rlpost.app.cli", "train")}
    assert set(trains) == {"learner-zero2", "learner-zero3", "sync-ipc", "sync-nccl", "rejoin-ipc", "rejoin-nccl",
                           "lora", "lora-merged", "qlora", "quickstart"}
    configs = {name: load_config(c.argv[4], list(c.argv[5:])) for name, c in trains.items()}
    assert configs["learner-zero2"].learner.zero_stage == 2 and configs["learner-zero3"].learner.zero_stage == 3
    assert all(configs[n].model.dtype == "bfloat16" and configs[n].learner.lr == 1e-3 for n in trains
               if n != "quickstart")
    assert configs["quickstart"].model.dtype == "float32"  # the recipe as shipped
    assert {n: configs[n].sync.transport for n in trains} == {
        "learner-zero2": "cpu", "learner-zero3": "cpu", "sync-ipc": "ipc", "sync-nccl": "nccl", "rejoin-ipc": "ipc",
        "rejoin-nccl": "nccl", "lora": "cpu", "lora-merged": "cpu", "qlora": "cpu", "quickstart": "cpu"}
    assert {n: (configs[n].model.lora_rank, configs[n].sync.lora, configs[n].model.load_in_4bit)
            for n in ("lora", "lora-merged", "qlora")} == {
        "lora": (16, "adapter", False), "lora-merged": (16, "merged", False), "qlora": (16, "adapter", True)}
    for name in ("sync-ipc", "rejoin-ipc"):  # colocated on one GPU, the others hidden
        assert configs[name].resources.rollout_gpus + configs[name].resources.learner_gpus <= 1
        assert trains[name].env["CUDA_VISIBLE_DEVICES"] == "0"
    if gpus >= 2:
        assert configs["sync-nccl"].resources.rollout_gpus == configs["sync-nccl"].resources.learner_gpus == 1
    assert configs["learner-zero3"].learner.world_size == (1 if gpus < 3 else 2)  # NCCL: one rank per GPU
    assert configs["rejoin-nccl"].run.steps == 4 and configs["sync-ipc"].sync.probe_sequences > 0


def test_placement_keeps_a_chosen_device(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    overrides, env = gc.placement(2, "ipc")
    assert env == {"CUDA_VISIBLE_DEVICES": "3"} and "learner.world_size=1" in overrides
    overrides, env = gc.placement(8, "nccl", ranks=4)
    assert env == {} and "learner.world_size=4" in overrides and "resources.learner_gpus=1" in overrides


def test_visible_gpus_without_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert box.visible_gpus() == []


# ---------------------------------------------------------------- the runner with fake commands

def test_runner_passes_fails_times_out_and_goes_on(tmp_path):
    checks = [_check("ok", "print('warming up'); print('[gpu_check] all good')"),
              _check("broken", "import sys; print('step 1'); raise RuntimeError('NCCL error: duplicate GPU')"),
              _check("slow", "import time; print('started', flush=True); time.sleep(60)", timeout_s=1.0),
              _check("after", "print('still ran')"),
              _check("skipper", f"import sys; print('[gpu_check] nothing staged'); sys.exit({gc.SKIP_RC})")]
    started = time.monotonic()
    results = _run(checks, tmp_path)
    assert time.monotonic() - started < 20
    assert [(r.name, r.status) for r in results] == [("ok", "PASS"), ("broken", "FAIL"), ("slow", "FAIL"),
                                                      ("after", "PASS"), ("skipper", "SKIP")]
    ok, broken, slow, after, skipper = results
    assert ok.detail == "all good" and after.detail == "still ran" and skipper.detail == "nothing staged"
    assert broken.detail == "RuntimeError: NCCL error: duplicate GPU"
    assert slow.detail.startswith("timed out after 1s") and "started" in slow.detail and slow.seconds < 15
    assert Path(broken.log).read_text().startswith("step 1")
    assert gc.exit_status(results) == 1 and gc.exit_status([ok, after, skipper]) == 0


def test_a_timed_out_check_takes_its_children_with_it(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '120']); "
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    (result,) = _run([_check("spawner", code, timeout_s=1.5)], tmp_path)
    assert result.status == "FAIL" and "timed out" in result.detail
    _assert_gone(int(pid_file.read_text()))


def test_skips_for_gpus_needs_and_budget(tmp_path, monkeypatch):
    checks = [_check("first", "raise SystemExit(2)"), _check("two-gpus", "print('x')", gpus=2),
              _check("needs-first", "print('x')", needs=("first",)),
              _check("needs-unselected", "print('ran')", needs=("not-selected",)),
              _check("sleepy", "import time; time.sleep(5)"), _check("late", "print('x')")]
    monkeypatch.setattr(gc, "STOP_GRACE_S", 0.5)
    seen: list[int] = []
    results = _run(checks, tmp_path, gpus=1, budget_s=3.5, min_slot_s=0.5, on_result=lambda rs: seen.append(len(rs)))
    assert seen == [1, 2, 3, 4, 5, 6]
    assert [r.status for r in results] == ["FAIL", "SKIP", "SKIP", "PASS", "FAIL", "SKIP"]
    assert results[1].detail == "needs 2 GPUs, 1 visible"
    assert results[2].detail == "needs first (FAIL)"
    assert results[3].detail == "ran"  # a needed check that was not run does not block
    assert "timed out" in results[4].detail  # cut to what was left of the budget
    assert results[5].detail == "time budget of 4s spent"


def test_what_a_passing_check_leaves_running_is_killed(tmp_path):
    pid_file = tmp_path / "leftover.pid"
    code = f"import subprocess; p = subprocess.Popen(['sleep', '120']); open({str(pid_file)!r}, 'w').write(str(p.pid))"
    (result,) = _run([_check("leaver", code)], tmp_path)
    assert result.status == "PASS"
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid: int) -> None:
    for _ in range(50):  # reparented and reaped after the kill
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"process {pid} outlived its check")


def test_a_judge_that_breaks_fails_its_check(tmp_path):
    def judge(outcome: gc.Outcome) -> tuple[str, str]:
        raise KeyError("tokens_per_s")

    check = gc.Check("odd", "a judge that breaks", (PY, "-c", "pass"), 10.0, judge)
    (result,) = _run([check], tmp_path)
    assert result.status == "FAIL" and result.detail == "could not judge: KeyError: 'tokens_per_s'"


# ---------------------------------------------------------------- judges and logs

TRACEBACK = """[rlpost] starting
Traceback (most recent call last):
  File "x.py", line 3, in <module>
    raise err
actors.calls.ActorDiedError: rollout.generate: the actor died (engine 0)
(RolloutWorker pid=77) INFO something after
"""


def test_failing_and_detail_lines():
    assert gc.failing_line(TRACEBACK) == "actors.calls.ActorDiedError: rollout.generate: the actor died (engine 0)"
    assert gc.failing_line("ok\nrlpost: error: learner.zero_stage: 5 not allowed\nbye\n") == \
        "rlpost: error: learner.zero_stage: 5 not allowed"
    assert gc.failing_line("one\ntwo\n\n") == "two" and gc.failing_line("") == "(no output)"
    assert gc.detail_line("a\n[gpu_check] first\nb\n[gpu_check] last\nc") == "last"
    assert gc.detail_line("a\nb\n") == "b"


def _metrics(path: Path, probes: list[float], extra: dict | None = None) -> None:
    rows = [{"step": 0, "timestamp": 1.0, "sync/probe_max_abs_diff": 0.004}]
    rows += [{"step": i + 1, "tokens/generated": 100, "time/wall": 2.0, "sync/probe_max_abs_diff": p,
              "train/logprob_mismatch_mean": -0.002, **(extra or {})} for i, p in enumerate(probes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9, "half-writ')


def _outcome(tmp_path: Path, rc: int | None, log: str) -> gc.Outcome:
    (tmp_path / "run.log").write_text(log)
    return gc.Outcome(rc, 12.0, tmp_path / "run.log", tmp_path)


def test_run_judge_reads_metrics_and_probes(tmp_path):
    _metrics(tmp_path / "runs" / "sync-ipc-1" / "metrics.jsonl", [0.01, 0.02, 0.015])
    log = ("[rlpost] held-out greedy accuracy after: sum3 90.0%, sum5 70.0%\n"
           "[rlpost] warning: vLLM engine 0 died; it is replaced by a new one\n")
    status, detail = gc.judge_run(3, 0.05)(_outcome(tmp_path, 0, log))
    assert status == "PASS"
    assert detail == ("3/3 steps; probe max 2.0e-02 (before training 4.0e-03); mismatch max 2.0e-03; 2.00 s/step; "
                      "accuracy after: sum3 90.0%, sum5 70.0%")
    assert gc.judge_run(3, 0.05, must_say="replaced")(_outcome(tmp_path, 0, log))[0] == "PASS"
    status, detail = gc.judge_run(3, 0.05, must_say="replaced")(_outcome(tmp_path, 0, "no fault\n"))
    assert status == "FAIL" and detail.startswith("the log never says 'replaced'")
    status, detail = gc.judge_run(4, 0.05)(_outcome(tmp_path, 0, log))
    assert status == "FAIL" and detail.startswith("too few steps logged: 3/4 steps; probe max 2.0e-02")
    status, detail = gc.judge_run(3, 0.01)(_outcome(tmp_path, 0, log))
    assert status == "FAIL" and detail.startswith("vLLM and the learner disagree (probe over 0.01): 3/3 steps")
    assert gc.judge_run(3, 0.05)(_outcome(tmp_path, 1, TRACEBACK)) == ("FAIL", gc.failing_line(TRACEBACK))


def test_runs_never_read_stale_metrics_and_bring_theirs_back(tmp_path):
    _metrics(tmp_path / "work" / "stale" / "runs" / "old" / "metrics.jsonl", [0.01, 0.01, 0.01])
    fresh = tmp_path / "work" / "fresh" / "runs" / "new" / "metrics.jsonl"
    row = json.dumps({"step": 1, "tokens/generated": 9, "sync/probe_max_abs_diff": 0.001})
    write = f"import pathlib; p = pathlib.Path({str(fresh)!r}); p.parent.mkdir(parents=True); p.write_text({row!r})"
    checks = [gc.Check("stale", "writes nothing", (PY, "-c", "pass"), 10.0, gc.judge_run(3, 0.05)),
              gc.Check("fresh", "writes metrics", (PY, "-c", write), 10.0, gc.judge_run(1, 0.05))]
    stale, fresh_result = _run(checks, tmp_path)
    assert stale.status == "FAIL" and stale.detail.startswith("too few steps logged: 0/3 steps")
    assert fresh_result.status == "PASS" and fresh_result.detail.startswith("1/1 steps; probe max 1.0e-03")
    assert json.loads((tmp_path / "logs" / "fresh.metrics.jsonl").read_text())["step"] == 1


def test_run_judge_without_metrics(tmp_path):
    status, detail = gc.judge_run(3, 0.05)(_outcome(tmp_path, 0, "exited early\n"))
    assert status == "FAIL" and detail.startswith("too few steps logged: 0/3 steps; probe max nan")


def test_bench_judge(tmp_path):
    result = tmp_path / "bench.json"
    judge = gc.judge_bench(result)
    assert judge(_outcome(tmp_path, 0, "Traceback\nValueError: no json\n")) == ("FAIL", "ValueError: no json")
    result.write_text(json.dumps({"results": {
        "rlpost": {"tokens_per_s": 5234.4, "s_per_step": 1.5}, "trl": {"tokens_per_s": 630.0, "s_per_step": 13.4},
        "bare": {"error": "bare exited 1"}}}))
    assert judge(_outcome(tmp_path, 0, "")) == (
        "PASS", "rlpost 5,234 tok/s (1.50 s/step); trl 630 tok/s (13.40 s/step)")


def test_long_logs_keep_head_and_tail(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"H" * 100 + b"M" * 1000 + b"T" * 50)
    gc.trim_log(log, (100, 50))
    text = log.read_text()
    assert text.startswith("H" * 100) and text.endswith("T" * 50) and "[trimmed] ... 1000 bytes cut" in text
    assert "M" not in text
    short = tmp_path / "short.log"
    short.write_text("fine")
    gc.trim_log(short, (100, 50))
    assert short.read_text() == "fine"


# ---------------------------------------------------------------- table and report

RESULTS = [gc.Result("env", "PASS", 3.25, "torch 2.11.0, 1 x NVIDIA H200", "/o/env.log"),
           gc.Result("sync-nccl", "SKIP", 0.0, "needs 2 GPUs, 1 visible"),
           gc.Result("bench", "FAIL", 412.0, "x" * 200, "/o/bench.log")]


def test_table_rows_and_totals():
    lines = gc.format_table(RESULTS, width=40).splitlines()
    assert lines[0].split() == ["check", "status", "seconds", "detail"]
    assert lines[1] == "env        PASS        3.2  torch 2.11.0, 1 x NVIDIA H200"
    assert lines[3].endswith("x" * 37 + "...") and len(lines[3].split("  ")[-1]) == 40
    assert lines[-1] == "1 passed, 1 failed, 1 skipped"


def test_report_json_and_table_file(tmp_path):
    path = gc.write_report(RESULTS, tmp_path / "out", {"gpus": ["GPU 0: NVIDIA H200"], "budget_s": 560.0})
    report = json.loads(path.read_text())
    assert path.name == "gpu_check.json" and report["failed"] == ["bench"] and report["gpus"] == ["GPU 0: NVIDIA H200"]
    assert report["checks"][2] == {"name": "bench", "status": "FAIL", "seconds": 412.0, "detail": "x" * 200,
                                   "log": "/o/bench.log"}
    assert (tmp_path / "out" / "gpu_check.txt").read_text().startswith("check ")


def test_out_dir_prefers_the_argument_then_dollar_out(monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gc.out_dir(Path("/x")) == Path("/x") and gc.out_dir(None) == tmp_path
    monkeypatch.delenv("OUT")
    assert gc.out_dir(None).parent == Path("runs") and gc.out_dir(None).name.startswith("gpu_check-")


def test_list_and_the_shell_wrapper():
    env = {**os.environ, "PYTHON": PY}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "list", "--skip", "bench"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()][:3] == ["install", "env", "vllm-api"]
    assert "bench" not in done.stdout


# ---------------------------------------------------------------- the vLLM names actors/ uses

def test_vllm_names_are_read_from_the_actors():
    names = box.vllm_names([REPO / "actors" / "rollout.py", REPO / "actors" / "weight_sync_gpu.py"])
    assert ("vllm", "LLM") in names and ("vllm.config", "WeightTransferConfig") in names
    assert ("vllm.distributed.weight_transfer", "RayVLLMWeightSyncClient") in names
    assert ("vllm:LLM", "init_weight_transfer_engine") in names and ("vllm:LLM", "collective_rpc") in names
    assert ("vllm.v1.worker.gpu_model_runner:GPUModelRunner", "reload_weights") in names
    assert names == sorted(set(names))


def test_missing_names_of_modules_and_classes():
    names = [("os.path", "join"), ("os.path", "nope"), ("json:JSONDecoder", "decode"), ("json:Nope", "x"),
             ("no_such_module_here", "x")]
    assert box.missing_names(names) == ["os.path.nope", "json:Nope.x", "no_such_module_here.x"]


# ---------------------------------------------------------------- wheels: parts, manifest, install

def test_wheel_names_and_pip_arguments(tmp_path):
    assert box.normalize("Outlines_Core") == "outlines-core" and box.normalize("zope.interface") == "zope-interface"
    assert box.wheel_name("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl") == ("ray", "2.60.0")
    assert box.wheel_name("/x/typing_inspection-0.4.5-py3-none-any.whl") == ("typing-inspection", "0.4.5")
    with pytest.raises(ValueError):
        box.wheel_name("ray-2.60.0.tar.gz")
    platforms = box.platform_args(31)[1::2]
    assert platforms[0] == "manylinux_2_31_x86_64" and "manylinux_2_17_x86_64" in platforms
    assert "manylinux2014_x86_64" in platforms and "manylinux_2_16_x86_64" not in platforms
    resolve = box.resolve_command("py", tmp_path / "r.json", tmp_path / "t", "3.12", 31)
    assert resolve[:5] == ["py", "-m", "pip", "install", "--dry-run"] and "vllm==0.25.0" in resolve
    assert not any(a.startswith("deepspeed") for a in resolve)  # sdist only: built, not resolved
    download = box.download_command("py", {"vllm": "0.25.0"}, tmp_path, "3.12", 31)
    assert "--no-deps" in download and download[-1] == "vllm==0.25.0" and "--only-binary=:all:" in download
    assert box.install_command("py", Path("/t"), [Path("/w/a.whl")])[-3:] == ["--target", "/t", "/w/a.whl"]


def test_pins_come_from_the_resolver_report():
    report = {"install": [{"metadata": {"name": "Pydantic_Core", "version": "2.50.5"}},
                          {"metadata": {"name": "torch", "version": "2.11.0"}},
                          {"metadata": {"name": "vllm", "version": "0.25.0"}}]}
    assert box.pins_from_report(report, ["vllm", "pydantic-core", "ray"]) == {"pydantic-core": "2.50.5",
                                                                              "vllm": "0.25.0"}


def test_split_and_join_round_trip(tmp_path):
    data = os.urandom(1000)
    (tmp_path / "blob").write_bytes(data)
    parts = box.split_file(tmp_path / "blob", tmp_path, 300)
    assert [p["size"] for p in parts] == [300, 300, 300, 100] and parts[0]["name"] == "blob.000"
    manifest = {"sha256": box.sha256(tmp_path / "blob"), "parts": parts}
    box.join_parts(manifest, tmp_path, tmp_path / "joined")
    assert (tmp_path / "joined").read_bytes() == data
    (tmp_path / "blob.002").write_bytes(b"x" * 300)  # same size, wrong bytes
    with pytest.raises(ValueError, match="blob.002 is corrupt"):
        box.join_parts(manifest, tmp_path, tmp_path / "joined")
    (tmp_path / "blob.003").unlink()
    (tmp_path / "blob.001").write_bytes(b"short")
    assert box.missing_parts(manifest, tmp_path) == ["blob.001", "blob.003"]
    with pytest.raises(FileNotFoundError, match="2 of 4 parts missing or short"):
        box.join_parts(manifest, tmp_path, tmp_path / "joined")


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A tiny pure-Python wheel that pip installs offline: a package whose module says its version."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as whl:
        for arc, text in files.items():
            whl.writestr(arc, text)
        whl.writestr(f"{info}/RECORD", "".join(f"{arc},,\n" for arc in files) + f"{info}/RECORD,,\n")
    return path


def test_pack_carry_plan_and_install(tmp_path):
    built = [_wheel(tmp_path / "built", "gpucheckfake", "0.1"), _wheel(tmp_path / "built", "gpucheckother", "2.0"),
             _wheel(tmp_path / "built", "pytest", pytest.__version__)]  # the same version as this environment's
    stage = tmp_path / "stage"
    manifest = box.pack(built, stage, part_bytes=700, tiers={"gpucheckother": "if_missing"})
    assert len(manifest["parts"]) > 1 and not (stage / box.ARCHIVE).exists()
    assert json.loads((stage / box.MANIFEST).read_text()) == manifest
    assert {w["name"]: w["tier"] for w in manifest["wheels"]} == {
        "gpucheckfake": "required", "gpucheckother": "if_missing", "pytest": "required"}
    plan = box.carry_plan(manifest, ".cache/gpu_wheels", [".cache/base_model"])
    assert plan[0] == [".cache/gpu_wheels/manifest.json", ".cache/base_model", ".cache/gpu_wheels/wheels.tar.000"]
    assert [len(call) for call in plan[1:]] == [1] * (len(manifest["parts"]) - 1)

    site = tmp_path / "site"
    said = box.install(stage, site)
    assert said.startswith(f"2 wheels installed into {site}; 1 kept from the image (pytest {pytest.__version__}")
    assert (site / "gpucheckfake" / "__init__.py").read_text() == "VERSION = '0.1'\n"
    assert (site / "gpucheckother").is_dir() and not (site / "pytest").exists()
    assert box.install(stage, site).startswith("already installed")  # the stamp names this manifest


def test_choose_by_tier():
    wheels = [{"file": "a.whl", "name": "a", "version": "1", "tier": "required"},
              {"file": "b.whl", "name": "b", "version": "1", "tier": "required"},
              {"file": "c.whl", "name": "c", "version": "1", "tier": "if_missing"},
              {"file": "d.whl", "name": "d", "version": "1", "tier": "if_missing"}]
    install, kept = box.choose(wheels, {"a": "1", "b": "0.9", "c": "0.5"})
    assert install == ["b.whl", "d.whl"] and kept == ["a 1", "c 0.5"]


def test_extract_refuses_paths(tmp_path):
    import tarfile

    (tmp_path / "evil.whl").write_text("x")
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        tar.add(tmp_path / "evil.whl", arcname="../evil.whl")
    with pytest.raises(ValueError, match="unexpected member"):
        box.extract(tmp_path / "bad.tar", tmp_path / "out")


def test_install_without_a_stage_is_a_skip(tmp_path, capsys):
    assert gc.main(["install", "--wheels", str(tmp_path / "none"), "--site", str(tmp_path / "site")]) == gc.SKIP_RC
    assert "no staged wheels" in capsys.readouterr().out
