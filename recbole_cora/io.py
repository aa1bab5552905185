"""Files shared by runs.

- Atomic writes: a file or folder is written under a temporary name beside its target and renamed into place, so a
  run killed at any instant leaves either the previous complete version or the new one, never half.
- Shared builds: what several runs in one folder may need at once (a stage, the candidate lists, the dequantised
  LLM, a token or zero-shot cache) is built by one of them under a lock while the others wait, then found by all.
  The lock is the operating system's (``filelock``: ``flock`` on POSIX), so it dies with the process that holds it:
  a run killed while building never blocks the next one.
- Unique names: two runs started in the same second get two results folders and two checkpoints.
"""

import contextlib
import os
import shutil
from logging import getLogger
from pathlib import Path

from filelock import FileLock, Timeout


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


def lock_file(path):
    """The lock file of a shared ``path``: hidden, beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def build_lock(path, what=None):
    """Hold the lock of the shared ``path`` (a file or folder some runs build and others reuse) inside the block.

    Check whether ``path`` is complete before taking it (no wait when it is) and again inside (another run may have
    built it while this one waited)."""
    lock_path = lock_file(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        getLogger().info(f"waiting for another run that is building {what or path} (lock {lock_path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def reserve(path, tail="", folder=True):
    """Claim ``<path><tail>`` for this run: make it (an empty folder, or an empty file when ``folder`` is False) only
    if no one has, else ``<path>-2<tail>``, ``<path>-3<tail>``, ... Returns the path claimed, without ``tail``.

    Names carry the time to the second (RecBole's ``get_local_time``), so two runs started in the same second would
    otherwise write into one results folder or one checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        stem = path.with_name(path.name + (f"-{n}" if n > 1 else ""))
        claimed = stem.with_name(stem.name + tail)
        try:
            if folder:
                claimed.mkdir()
            else:
                claimed.touch(exist_ok=False)
            return stem
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for '{path}{tail}' after 9,999 tries: clear old runs out of '{path.parent}'.")
