"""The one way entry scripts run: Hydra overrides in, one `error: ...` line and exit 1 for anything a user causes.

    run(main, "inference", schema=InferenceConfig)

- The config is composed with Hydra's compose API from `key=value` overrides (`--help`: the settings with their
  descriptions and the config groups; `--cfg job`: every key); a bad override, a mistyped key or a value of the
  wrong type ends with one line naming it.
- KDTalkerError and OSError (disk full, permission denied, ...) end with one line and exit 1; under torchrun, a rank
  whose peer failed (PeerFailed) exits 1 without a line, as the failing rank prints it.
- SIGINT (Ctrl-C) and SIGTERM (a scheduler, `timeout`, a container stop) raise inside the run, so every clean-up
  (atomic writes, temporary folders, the ffmpeg child) runs; the run ends with `error: interrupted` and exit
  130 / 143. A second signal during the clean-up is ignored.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, NoReturn, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdtalker.cli_help import help_text
from kdtalker.config import CONFIG_DIR, compose_config, config_error
from kdtalker.errors import KDTalkerError, PeerFailed, Terminated
from kdtalker.fileio import describe_os_error

EXIT_ERROR = 1
EXIT_SIGINT = 128 + signal.SIGINT


def _raise_terminated(signum: int, frame: Any) -> None:
    _ignore_signals()
    raise Terminated(signum)


def _raise_interrupt(signum: int, frame: Any) -> None:
    _ignore_signals()
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    """During the clean-up after the first signal, further ones must not cut it short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def install_signal_handlers() -> None:
    """SIGTERM -> Terminated, SIGINT -> KeyboardInterrupt, both raised in the main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_interrupt)


def fail(message: str, code: int = EXIT_ERROR, details: Sequence[str] = ()) -> NoReturn:
    """Print `error: message` as one line on stderr (then each of `details` indented under it) and exit with `code`."""
    text = " ".join(str(message).split())
    items = "".join(f"\n  {' '.join(str(d).split())}" for d in details)
    print(f"error: {text}{items}", file=sys.stderr, flush=True)
    sys.exit(code)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an error a user causes (bad input, missing file, OS error, memory); None for a bug."""
    if isinstance(exc, KDTalkerError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = describe_os_error(exc)
    elif isinstance(exc, MemoryError) or _device_out_of_memory(exc):
        where = "the GPU ran out of memory" if _device_out_of_memory(exc) else "out of memory"
        text = f"{where}; use a smaller batch_size (train.batch_size when training), a shorter input, or more memory"
    else:
        return None
    return " ".join(text.split())


def _device_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error of an accelerator (torch is not imported here just to ask)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def guarded(body: Callable[[], Any]) -> Any:
    """Run `body` with signal handlers installed; user errors, OS errors and signals become one line + exit code."""
    install_signal_handlers()
    try:
        return body()
    except PeerFailed:  # under torchrun: the failing rank prints the one line; the job's other ranks stay quiet
        sys.exit(EXIT_ERROR)
    except (KDTalkerError, OSError, MemoryError) as exc:
        fail(user_message(exc), details=getattr(exc, "details", ()))
    except RuntimeError as exc:  # torch.OutOfMemoryError is one
        if not _device_out_of_memory(exc):
            raise
        fail(user_message(exc))
    except Terminated as exc:
        fail("interrupted", 128 + exc.signum)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_SIGINT)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(
    main: Callable[[Any], Any],
    config_name: str,
    schema: type | None = None,
    argv: Sequence[str] | None = None,
    usage: str = "",
    config_dir: str | os.PathLike = CONFIG_DIR,
) -> Any:
    """Compose the config from argv (`key=value` overrides) and call main(cfg), with all errors as one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        overrides = [a for a in args if a not in ("-h", "--help")]
        cfg = guarded(lambda: compose_config(config_name, overrides, config_dir=config_dir))
        print((usage.strip() + "\n\n" if usage else "") + help_text(config_dir, config_name, cfg, overrides))
        return None
    if "--cfg" in args:
        at = args.index("--cfg")
        if args[at + 1 : at + 2] != ["job"]:
            fail("--cfg takes job: --cfg job prints every key of the composed config")
        overrides = args[:at] + args[at + 2 :]
        print(OmegaConf.to_yaml(guarded(lambda: compose_config(config_name, overrides, config_dir=config_dir))))
        return None
    bad = [a for a in args if a.startswith("-")]
    if bad:
        fail(f"unknown option {bad[0]}; settings are key=value overrides (see --help)")

    def body() -> Any:
        cfg = compose_config(config_name, args, schema, config_dir)
        try:
            return main(cfg)
        except OmegaConfBaseException as exc:  # a value read later (an interpolation) that does not convert
            raise config_error(exc, schema) from None

    return guarded(body)
