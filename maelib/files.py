"""Writing files so that a crash never leaves half of one: atomic writes, their stale temporaries, and a lock
that keeps two runs out of one folder. Everything maelib writes (weights, checkpoints, sweep results, figures'
JSON) goes through `atomic_write`."""

from __future__ import annotations

import os
import secrets
import stat
import time
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) then rename onto `path`, so a crash mid-write never leaves a truncated file.

    The temporary file (".<name>.<random>.tmp") is in the same folder, so the rename is atomic; it is flushed
    to disk first, so the renamed file is whole even after a power cut. A process killed mid-write leaves the
    old `path` untouched and the temporary file behind (`remove_stale_temporaries` clears those).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like tempfile.mkstemp, but with the umask's permissions (mkstemp makes files private, 0600)
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0666 less the umask, as open() would give
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that replace the file (safetensors' save_file) leave it private (0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that `atomic_write(path, ...)` calls killed mid-write left next to `path`.
    Only call it when no other process is writing `path`."""
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


LOCK_GRACE_SECONDS = 10.0


def _holder_is_gone(holder: str) -> bool:
    """Whether the process named in a lock file ("pid 123") no longer exists. A run killed a moment ago can still
    hold its lock while the system tears it down; a live holder is never waited for."""
    try:
        os.kill(int(holder.removeprefix("pid ")), 0)
    except ValueError:
        return False  # no pid written: nothing known, treat as live
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@contextmanager
def run_dir_lock(run_dir: str | os.PathLike):
    """Hold an exclusive lock on a run directory (`.maelib.lock`, with the holder's pid) while a run writes there,
    so that two runs cannot overwrite each other's checkpoints and logs: a second process is refused, naming the
    first. Released at the end of the block, or when the process dies. POSIX (fcntl.flock)."""
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".maelib.lock"
    f = open(lock, "a+")
    deadline = time.monotonic() + LOCK_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            if not _holder_is_gone(holder) or time.monotonic() > deadline:
                f.close()
                raise RuntimeError(
                    f"{run_dir} is in use by another maelib run ({holder}), which is writing its checkpoints and logs "
                    "there. Wait for it to finish, or give this run its own directory: --trainer.default_root_dir "
                    "runs/<new name>") from None
            time.sleep(0.2)  # the run named in the file has died: the system is releasing its lock
    try:
        f.seek(0), f.truncate(), f.write(f"pid {os.getpid()}"), f.flush()
        yield lock
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write` for text (JSON results, caches): readers see the old file or the new one, never half."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
