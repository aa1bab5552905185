"""Atomic writes: a file or folder is written under a temporary name beside its target and renamed into place,
so a run killed at any instant leaves either the previous complete version or the new one, never half."""

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; write to it inside the block; it replaces ``path`` on success
    (and is removed on failure). Works for a file or a folder the block creates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
