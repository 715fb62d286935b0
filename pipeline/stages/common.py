"""What every stage entry point shares: config loading, logging, and clean failure."""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from pipeline.config import ConfigError, load, workspace_root
from pipeline.errors import PipelineError, sigterm_raises

log = logging.getLogger("pipeline")

# Errors whose message already says what is wrong and where: no traceback for the user.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (PipelineError, FileNotFoundError)
# The machine, not the code, is at fault (full disk, quota, read-only or forbidden folder): the
# errno text and file name say it all, and atomic writes left the previous outputs in place
# (ENOTDIR: a file where a folder should be, e.g. a mistyped ALL_DETECT_CV_STORE; EPERM: an
# immutable folder, or a mount that refuses writes so, e.g. some FUSE and SMB shares).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)


def stage(func: Callable[..., None]) -> Callable[[list[str] | None], int]:
    """Wrap `func(cfg, *names)` as a CLI: `python -m pipeline.stages.X [name ...] [key=value ...]`.

    Plain words (e.g. a model name) are passed on as positional arguments; `key=value` overrides
    are for ad-hoc runs, since under DVC every stage reads params.yaml as it is.
    """

    @functools.wraps(func)
    def main(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        name = _stage_name(func)
        args = sys.argv[1:] if argv is None else argv
        usage = _usage(func, name)
        if {"-h", "--help"} & set(args):
            print(f"{usage}\n\n{sys.modules[func.__module__].__doc__ or ''}".rstrip())
            return 0
        words = [a for a in args if "=" not in a]
        try:
            inspect.signature(func).bind(None, *words)
        except TypeError as exc:  # "missing a required argument", "too many positional ..."
            print(f"error in stage {name}: {exc} (got {words})\n{usage}", file=sys.stderr)
            return 2
        name = "@".join([name, *words])  # as dvc.yaml names it (train@svm_hog): which model failed
        outside = _outside_workspace()
        if outside:
            print(f"error in stage {name}: {outside}", file=sys.stderr)
            return 2
        restore_sigterm = sigterm_raises()
        try:
            cfg = load(overrides=[a for a in args if "=" in a])
            func(cfg, *words)
        except Exception as exc:
            if not _is_expected(exc):
                raise
            print(f"error in stage {name}: {exc}", file=sys.stderr)
            return 1
        finally:
            restore_sigterm()
        return 0

    return main


def model_config(cfg: DictConfig, model_name: str) -> dict:
    """The `models.<name>` section as a plain dict, or a clear error listing the known names."""
    from omegaconf import OmegaConf

    if model_name not in cfg.models:
        raise ConfigError(f"unknown model {model_name!r}; configured: {sorted(cfg.models)}")
    return OmegaConf.to_container(cfg.models[model_name], resolve=True)


def _usage(func: Callable[..., None], name: str) -> str:
    """The command line `func(cfg, ...)` takes, from its signature."""
    words = []
    for parameter in list(inspect.signature(func).parameters.values())[1:]:
        if parameter.kind is parameter.VAR_POSITIONAL:
            words.append(f"[{parameter.name} ...]")
        elif parameter.default is parameter.empty:
            words.append(f"<{parameter.name}>")
        else:
            words.append(f"[{parameter.name}]")
    return " ".join(["usage: python -m pipeline.stages." + name, *words, "[key=value ...]"])


def _outside_workspace() -> str | None:
    """Why a stage must not run here: below its workspace it would read that workspace's
    params and data roots but write its outputs under the working directory."""
    here, root = Path.cwd().resolve(), workspace_root()
    if here == root:
        return None
    return (
        f"run it from the workspace {root} (the folder of dvc.yaml or params.yaml), not from "
        f"{here}: stage outputs are written relative to the working directory"
    )


def _stage_name(func: Callable[..., None]) -> str:
    """'ingest' for pipeline.stages.ingest, also when run as `python -m` (module `__main__`)."""
    spec = getattr(sys.modules.get(func.__module__), "__spec__", None)
    return (spec.name if spec else func.__module__).rsplit(".", 1)[-1]


def _is_expected(exc: Exception) -> bool:
    if isinstance(exc, EXPECTED_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS
