"""File output that never leaves a half-written result: checked paths, atomic writes, self-cleaning temp folders.

- `check_output_path` refuses, before any work, an output that cannot be written (a folder, a special file, a
  missing or unwritable folder), trying a real write in its folder (permission bits say nothing to root).
- `atomic_path` writes to a hidden sibling `.NAME.<pid>.<random>SUFFIX.part` and renames it into place on
  success. The sibling is created as `open()` would create the file (the umask decides its mode); an existing
  output keeps its own mode. Siblings left by killed runs (their pid is gone) are removed on the next write.
- `write_text_atomic` / `copy_atomic`: the common writes, through `atomic_path`. Every file a run writes goes
  through `atomic_path`, so any run that writes to a folder clears the parts killed runs left there.
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
from typing import Iterator, Mapping

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


def _check_target(path: Path, what: str) -> None:
    """OutputError when `path` is a folder or a special file, or its folder is missing or not a folder."""
    if path.is_dir():
        raise OutputError(f"cannot write {what} {path}: it is an existing folder; give a file name inside it")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {what} {path}: it is not a regular file (a device or a pipe)")
    if not path.parent.exists():
        raise OutputError(f"cannot write {what} {path}: the folder {path.parent} does not exist (create it first)")
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {path.parent} is not a folder")


def _new_sibling(path: Path, what: str, mode: int) -> tuple[Path, int]:
    """Create the hidden sibling `.NAME.<pid>.<random>.part` (umask applied to `mode`) -> (its path, its mode)."""
    sibling = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}"
    try:
        fd = os.open(sibling, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except OSError as exc:
        reason = describe_os_error(OSError(exc.errno, exc.strerror))  # the sibling's own name would only confuse
        raise OutputError(
            f"cannot write {what} {path}: the folder {path.parent} does not accept new files ({reason}); "
            "choose another folder"
        ) from None
    try:
        return sibling, stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Check that `path` can be written as a file; OutputError naming the problem. Leaves nothing behind."""
    path = Path(path)
    _check_target(path, what)
    probe, _ = _new_sibling(path, what, 0o600)  # a real write: permission bits say nothing to root, or of /proc
    probe.unlink()
    return path


def check_not_input(path: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], key: str) -> None:
    """OutputError when the output `key`=path is one of the named inputs: a file read is never written."""
    target = os.path.realpath(path)
    for name, given in inputs.items():
        if given is not None and str(given) and os.path.realpath(given) == target:
            raise OutputError(f"{key}={path} is also the input {name}={given}; write the output to another file")


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
    """Delete the temporary siblings (files, or folders being built) in `folder` left by runs that no longer
    exist -> the removed paths."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            pid = _part_pid(entry.name)
            if pid is not None and not _pid_alive(pid):
                with contextlib.suppress(OSError):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                    removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds, delete it otherwise."""
    path = Path(path)
    _check_target(path, what)
    remove_stale_parts(path.parent)
    tmp, new_mode = _new_sibling(path, what, 0o666)  # the mode open() would give a new file
    try:
        yield tmp
        try:
            # Writers may recreate the file (ffmpeg, torch.save): set the mode the output must end with.
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.is_file() else new_mode)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {path}: {describe_os_error(exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "output") -> Path:
    """Write `text` to `path` through atomic_path (so also clearing the stale parts of its folder)."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text)
    return Path(path)


def copy_atomic(source: str | os.PathLike, path: str | os.PathLike, what: str = "output") -> Path:
    """Copy the file `source` to `path` through atomic_path: a killed copy leaves no partial file."""
    with atomic_path(path, what) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


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
