"""File output that never leaves a half-written result: checked paths, atomic writes, self-cleaning temp folders.

- `check_output_path` refuses, before any work, an output that cannot be written (a folder, a special file, a
  missing or unwritable folder), trying a real write in its folder (permission bits say nothing to root).
- `atomic_path` writes to a hidden sibling `.NAME.<pid>.<random>SUFFIX.part` and renames it into place on
  success. The sibling is created as `open()` would create the file (the umask decides its mode); an existing
  output keeps its own mode. Siblings left by killed runs (their pid is gone) are removed on the next write.
- `temp_dir` is a TemporaryDirectory named with the pid; folders of dead processes are removed when a new one
  is made, so even SIGKILL leaves nothing behind for long.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from kdtalker.errors import OutputError

PART_SUFFIX = ".part"


def describe_os_error(exc: OSError) -> str:
    """A short text for an OSError: the reason and the file it concerns."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (the disk is full: free some space)"
    elif exc.errno == errno.EFBIG:
        reason += " (the file system or a size limit refuses files this large)"
    name = exc.filename or ""
    return f"{reason}: {name}" if name else reason


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Check that `path` can be written as a file; OutputError naming the problem. Leaves nothing behind."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is an existing folder; give a file name inside it")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {what} {path}: it is not a regular file (a device or a pipe)")
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"cannot write {what} {path}: the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {path}: {folder} is not a folder")
    probe = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = describe_os_error(OSError(exc.errno, exc.strerror))  # the probe's own name would only confuse
        raise OutputError(
            f"cannot write {what} {path}: the folder {folder} does not accept new files ({reason}); "
            "choose another folder"
        ) from None
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _owner_pid(name: str, prefix: str) -> int | None:
    """The pid in a temp folder name made by `temp_dir` ('<prefix><pid>_<random>'), or None."""
    if not name.startswith(prefix):
        return None
    head = name[len(prefix) :].split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _part_pid(name: str) -> int | None:
    """The pid in a temporary sibling made by `atomic_path` ('.<name>.<pid>.<random>.part'), or None."""
    parts = name.split(".")
    if not name.startswith(".") or len(parts) < 4 or parts[-1] != PART_SUFFIX[1:] or not parts[-3].isdigit():
        return None
    return int(parts[-3])


def remove_stale_parts(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings in `folder` left by runs that no longer exist -> the removed paths."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            pid = _part_pid(entry.name)
            if pid is not None and not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds, delete it otherwise."""
    path = check_output_path(path)
    remove_stale_parts(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask applies, as for open()
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}") from None
    try:
        yield tmp
        try:
            # Writers may recreate the file (ffmpeg, torch.save): set the mode the output must end with.
            mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {describe_os_error(exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A private temporary folder `<tmp>/<prefix><pid>_<random>`, removed afterwards (also stale ones of dead pids)."""
    base = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            pid = _owner_pid(entry.name, prefix)
            if pid is not None and entry.is_dir() and not _pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
