"""Files and folders that appear whole or not at all: written under a temporary name and renamed into place, so a
crash mid-write leaves the previous version (or nothing), never half of one. Used for run-directory records and for
the cached builds (base models, the LC-PFN extrapolator)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path`'s contents with `text` in one rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_dir_atomic(out_dir: Path, build: Callable[[Path], object]) -> None:
    """Run `build(folder)` into a temporary folder beside `out_dir`, then put it in `out_dir`'s place, so an
    interrupted build never looks complete."""
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
