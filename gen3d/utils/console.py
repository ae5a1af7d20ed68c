"""What the terminal shows during a run: gen3d's own lines once each, one progress bar per stage, warnings
a user can act on (once each), and no library banners.

    setup_console("normal" | "quiet" | "verbose")   # once, first thing in launch.py (--quiet, --verbose)

normal: gen3d INFO lines, progress bars (stderr), warnings, the end-of-run summary. quiet: warnings and
errors only. verbose: also the libraries' INFO lines (Lightning's device banner, ...), gen3d's DEBUG
lines and the per-step loss lines (which always go to the run's log.txt).

Library INFO lines are dropped by a filter on the one console handler, not by logger levels: Lightning
sets its logger's level when it is imported, which happens after this setup (imports are deferred).
Importing nothing heavy here keeps the error paths of the command line fast.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LEVELS = {"quiet": logging.WARNING, "normal": logging.INFO, "verbose": logging.DEBUG}
STEP_LOGGER = "gen3d.steps"  # per-step loss lines: log.txt always, the console only when verbose
LIBRARIES = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "peft",
    "torch.distributed",
    "trimesh",
    "PIL",
    "matplotlib",
)
# library warnings nobody running gen3d can act on (their causes are internal, or intended)
IGNORED_WARNINGS = (
    r".*LeafSpec.*is deprecated",  # lightning's own use of torch's pytree API
    r".*module\(s\) in eval mode at the start of training",  # frozen prior modules are eval on purpose
    r".*does not have many workers",  # cameras are generated, not loaded
    r".*`tensorboardX` has been removed as a dependency",
    r".*Checkpoint directory .* exists and is not empty",  # resumed runs write into their ckpts/
    r".*predicts with \w+ weights.*",
    r".*smaller than the logging interval",  # short runs log every trainer.log_every steps anyway
)
NEVER_SHOWN = ("litlogger",)  # Lightning's advertisement: not shown even when verbose
_state = {"verbosity": "normal"}


class _ConsoleFilter(logging.Filter):
    """Drops library INFO lines (unless verbose), per-step lines (unless verbose), advertisements, and a
    warning whose message was already shown (warnings repeated per step or per stage)."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        verbose = _state["verbosity"] == "verbose"
        if any(word in record.getMessage() for word in NEVER_SHOWN):
            return False
        if record.levelno < logging.INFO and not record.name.startswith(("gen3d", "video")):
            return False  # libraries' DEBUG lines (fsspec's "open file", ...), even when verbose
        if record.levelno < logging.WARNING:
            if record.name == STEP_LOGGER or record.name.startswith(STEP_LOGGER + "."):
                return verbose
            return verbose or not record.name.startswith(LIBRARIES)
        key = record.getMessage()
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING and not msg.startswith(("warning:", "error:")):
            msg = f"warning: {msg}"
        return msg


class _ConsoleHandler(logging.StreamHandler):
    """The one console handler on the root logger (replaced, not added twice, by setup_console)."""


def _show_warning(message, category, filename, lineno, file=None, line=None):
    logging.getLogger("gen3d.warnings").warning("%s", str(message).strip().splitlines()[0])


def verbosity() -> str:
    return _state["verbosity"]


def progress_enabled() -> bool:
    return _state["verbosity"] != "quiet"


def setup_console(level: str = "normal") -> None:
    """One stdout handler on the root logger, library noise quieted, warnings once each."""
    if level not in LEVELS:
        raise ValueError(f"unknown console level {level!r}")
    _state["verbosity"] = level
    for var, value in (
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        if level != "verbose":
            os.environ.setdefault(var, value)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ConsoleHandler)]:
        root.removeHandler(old)
    handler = _ConsoleHandler(sys.stdout)
    handler.setFormatter(_Formatter())
    handler.addFilter(_ConsoleFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level == "verbose" else logging.INFO)
    handler.setLevel(LEVELS[level])
    logging.getLogger("gen3d").setLevel(LEVELS[level] if level == "verbose" else logging.INFO)
    warnings.showwarning = _show_warning
    # Python's default filters stay (libraries' DeprecationWarnings hidden); gen3d's own are shown
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"(gen3d|video)(\.|$)")
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    quiet_libraries()


def quiet_libraries() -> None:
    """Remove the handlers libraries attach to their loggers (their lines then reach the console once,
    through the root handler) and keep their INFO banners out unless verbose."""
    lib_level = logging.INFO if _state["verbosity"] == "verbose" else logging.WARNING
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(lib_level)
    for name in list(logging.root.manager.loggerDict):  # children that set their own level
        if name.startswith(("lightning.", "pytorch_lightning.")):
            child = logging.getLogger(name)
            child.handlers.clear()
            child.setLevel(logging.NOTSET)
