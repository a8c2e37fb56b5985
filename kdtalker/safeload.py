"""Reading untrusted .pth/.pkl files: nothing in a file is ever executed or imported.

A pickle names functions and classes ("globals") that the loader calls to rebuild objects; a hostile file names
`os.system` or `builtins.exec`. Loading goes through torch's `weights_only` unpickler, which calls only the
tensor/storage rebuilders of its own allow-list and the globals granted here:
- plain data types (int, float, str, dict, ...) and the numpy pieces of an ndarray / numpy scalar, which our own
  training checkpoints hold in their RNG states;
- every other global the file names (found by disassembling the pickle, which runs nothing) is granted as an
  inert `ForeignObject` subclass of the same name: it records its arguments and state as data and has no other
  behaviour. So an official-trainer checkpoint whose `cfg` pickles `config.structured.*` classes that do not
  exist here loads, with `cfg` as data, and a payload like `builtins.exec(...)` becomes a harmless record.
Files naming the system, the interpreter or the import machinery (os, subprocess, exec, ...) are refused outright,
with a message saying the file may be malicious.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from kdtalker.errors import CheckpointError

# Harmless types that checkpoints hold as data (OmegaConf metadata stores e.g. ref_type=int).
_DATA_TYPES = (int, float, complex, bool, str, bytes, bytearray, dict, list, tuple, set, frozenset, slice, range)


def _plain_dict(*_args: Any) -> dict:
    """Stands in for collections.defaultdict: the items arrive afterwards, the default factory is dropped."""
    return {}


def _numpy_globals() -> list[tuple[Any, str]]:
    """ndarray, dtype and scalar rebuilders under the names numpy 1.x and 2.x pickle them with."""
    core = getattr(np, "_core", None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    entries: list[tuple[Any, str]] = []
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    entries += [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for code in "?bBhHiIlLqQefdgFDGUSO":
        dtype_class = type(np.dtype(code))
        entries.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
    return entries


ALLOWED_GLOBALS: tuple[tuple[Any, str], ...] = (
    *((t, f"builtins.{t.__name__}") for t in _DATA_TYPES),
    (_plain_dict, "collections.defaultdict"),
    *_numpy_globals(),
)
_ALLOWED_NAMES = frozenset(name for _, name in ALLOWED_GLOBALS)


# Globals no weight file has a reason to name: a file naming one is refused outright, with that reason (it would
# load inertly anyway, except os/sys/posix/nt, which torch's unpickler itself refuses).
HOSTILE_MODULES = frozenset(
    {
        "os",
        "sys",
        "posix",
        "nt",
        "subprocess",
        "commands",
        "runpy",
        "importlib",
        "shutil",
        "socket",
        "pty",
        "ctypes",
        "code",
        "pickle",
        "marshal",
        "types",
        "webbrowser",
        "pdb",
    }
)
HOSTILE_BUILTINS = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "__import__",
        "open",
        "getattr",
        "setattr",
        "delattr",
        "breakpoint",
        "input",
        "globals",
        "locals",
        "vars",
    }
)


def hostile_globals(names: set[str]) -> list[str]:
    """The names among `names` that call into the system, the interpreter or the import machinery."""

    def hostile(full: str) -> bool:
        module, _, name = full.rpartition(".")
        return module.split(".")[0] in HOSTILE_MODULES or (
            module in ("builtins", "__builtin__") and name in HOSTILE_BUILTINS
        )

    return sorted(n for n in names if hostile(n))


_PY2_MODULES = frozenset(_compat_pickle.IMPORT_MAPPING) | {module for module, _ in _compat_pickle.NAME_MAPPING}


def refuse_hostile(path: str | os.PathLike, what: str) -> set[str]:
    """CheckpointError when the file names a hostile global; returns all the names it names."""
    names = pickle_globals(path)
    bad = hostile_globals(names)
    bad = [n for n in bad if n.rpartition(".")[0] not in _PY2_MODULES] or bad  # each once, as Python 3 spells it
    if bad:
        raise CheckpointError(
            f"{what}: {path} was refused: it asks to call {', '.join(bad[:3])}, which no weight file needs - it "
            "may be malicious (nothing in it was run); delete it and download the file again from its official source"
        )
    return names


_NAME_MAPPINGS = (
    (_compat_pickle.NAME_MAPPING, _compat_pickle.IMPORT_MAPPING),
    (getattr(torch._utils, "NAME_MAPPING", {}), getattr(torch._utils, "IMPORT_MAPPING", {})),
)


class ForeignObject:
    """An object of a class this project does not know: its pickled arguments and state, kept as inert data."""

    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "ForeignObject":
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: __new__ kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"ForeignObject({self.global_name})"


def foreign_class(name: str) -> type:
    """A fresh inert ForeignObject subclass standing for the global `name` ('module.Name')."""
    return type(name.rsplit(".", 1)[-1], (ForeignObject,), {"global_name": name, "__module__": __name__})


def _globals_in(stream: BinaryIO) -> set[str]:
    """The GLOBAL names of the one pickle starting at the stream's position (disassembled, nothing runs)."""
    names = set()
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            names.add(f"{module}.{name}")
            # Protocol-2 pickles spell Python 2 names (__builtin__, ...), which unpicklers map to Python 3 ones;
            # torch's mapping tables differ from the standard library's, so both spellings are granted.
            for name_mapping, import_mapping in _NAME_MAPPINGS:
                mapped = name_mapping.get((module, name)) or (import_mapping.get(module, module), name)
                names.add(".".join(mapped))
    return names


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """Every global a torch file (zip or legacy format) or a plain pickle names, found without unpickling it."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                raise ValueError("a zip archive without data.pkl is not a PyTorch checkpoint")
            with archive.open(member) as fh:
                return _globals_in(fh)
    names: set[str] = set()
    with open(path, "rb") as fh:
        # A legacy torch file is pickles in a row (magic number, protocol, system info, the object, then raw
        # storages); a plain pickle file is one pickle. Only the first must parse; the rest ends at data or EOF.
        for index in range(4):
            try:
                names |= _globals_in(fh)
            except ValueError:
                if index == 0:
                    raise
                break
    return names


def load_untrusted(path: str | os.PathLike, what: str, mmap: bool = False) -> Any:
    """torch.load of a file from anywhere, on CPU, executing nothing -> its object (foreign classes as ForeignObject).

    CheckpointError when the file is not a readable PyTorch file or names a hostile global (os.system, exec, ...).
    """
    path = Path(path)
    try:
        names = refuse_hostile(path, what)
        granted = list(ALLOWED_GLOBALS) + [(foreign_class(n), n) for n in sorted(names - _ALLOWED_NAMES)]
        with torch.serialization.safe_globals(granted), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on pickle protocols; errors still raise
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        text = str(exc).split("WeightsUnpickler error:", 1)[-1]
        raise CheckpointError(
            f"{what}: {path} could not be read as a PyTorch checkpoint ({_first_line(text)}); "
            "the file is truncated or not the right file - download it again"
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        NotImplementedError,
    ) as exc:
        raise CheckpointError(
            f"{what}: {path} could not be read as a PyTorch checkpoint "
            f"({type(exc).__name__}: {_first_line(str(exc))}); "
            "the file is truncated or not the right file - download it again"
        ) from None


def _first_line(text: str) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "no message")
    return line[:300]
