"""Exceptions the CLI turns into one line, and the names their messages give settings.

Library messages name a setting as Python users write it, in backticks: a config field or an API
parameter (`` `flops_target` ``, `` `reward.kind` ``, `` `resume=True` ``). The command line
renders those as its flags (:func:`as_flags`), the YAML config loader as its keys
(:func:`as_keys`), so each reader sees the name they typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# `name`, `a.b` or `name=value`: a setting named in a message
SETTING = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)(?:=([^`]+))?`")


class EntropruneError(Exception):
    """A problem with the user's input: the message names the problem and the fix (exit code 2)."""


class DataError(EntropruneError):
    """A dataset is missing, corrupt or inconsistent."""


class CheckpointError(EntropruneError):
    """A checkpoint cannot be read or does not match its spec."""


class UntrustedPickleError(CheckpointError):
    """A checkpoint holds pickled objects and loading them was not allowed (``trust_pickle``): callers that
    offer no such opt-in (the main job) say what to do instead."""


class ConfigError(EntropruneError):
    """An option, policy or config value is invalid."""


class SearchInterrupted(Exception):
    """A search stopped by Ctrl-C once its state is saved; the message says how to resume (exit 130)."""


class RunInterrupted(SearchInterrupted):
    """The main job stopped by Ctrl-C: the stages it finished stay in its folder and a resume continues from
    them (exit 130). ``stage`` is the one it stopped in."""

    def __init__(self, run_dir: str, stage: str) -> None:
        self.run_dir, self.stage = run_dir, stage
        super().__init__(self._saying(f"entroprune.resume_run({run_dir!r})"))

    def command_line(self) -> str:
        """The message for a command-line user."""
        import shlex  # a folder with a space ("my runs") is one argument of the command the user copies

        return self._saying(f"`entroprune run --resume {shlex.quote(str(self.run_dir))}`")

    def _saying(self, how: str) -> str:
        return f"run stopped during its {self.stage}; the stages it finished are kept in {self.run_dir}: continue with {how}"


class SweepInterrupted(SearchInterrupted):
    """A sweep stopped by Ctrl-C: its finished runs, and the finished stages of the one it stopped in, are kept,
    and a resume continues from them (exit 130)."""

    def __init__(self, sweep_dir: str, run: str, stage: str) -> None:
        self.sweep_dir, self.run, self.stage = sweep_dir, run, stage
        super().__init__(self._saying(f"entroprune.resume_sweep({sweep_dir!r})"))

    def command_line(self) -> str:
        """The message for a command-line user."""
        import shlex

        return self._saying(f"`entroprune sweep --resume {shlex.quote(str(self.sweep_dir))}`")

    def _saying(self, how: str) -> str:
        return (f"sweep stopped during the {self.stage} of its run {self.run}; the runs and stages it finished are "
                f"kept in {self.sweep_dir}: continue with {how}")


class RunError(EntropruneError):
    """Not the input but the run: a training that diverged, a worker that died (exit code 1)."""


class EntropruneDeprecationWarning(FutureWarning):
    """A renamed setting: shown to CLI, YAML and API users alike (FutureWarning is not hidden by default)."""


def out_of_memory(exc: BaseException) -> str:
    """What an allocation that failed asked for ('' where ``exc`` is no allocation failure): torch raises
    RuntimeError on the CPU and its OutOfMemoryError (a RuntimeError) on CUDA; Python's own, MemoryError."""
    if isinstance(exc, MemoryError):
        return "Python could not allocate"
    text = str(exc)
    if (m := re.search(r"tried to allocate (\d+) bytes", text)) is not None:
        return f"one tensor needed {int(m.group(1)) / 1e9:.1f} GB"
    if (m := re.search(r"[Tt]ried to allocate ([\d.]+ [KMG]iB)", text)) is not None:
        return f"one tensor needed {m.group(1)} on the GPU"
    return "torch could not allocate" if "out of memory" in text.lower() or "can't allocate memory" in text else ""


def one_line(exc: BaseException) -> str:
    """An exception quoted inside a one-line refusal: its type and the first line of its message, backticks made
    quotes (torch writes "`embed_dim` must divide ...": the CLI would render them as its own flags)."""
    text = str(exc).strip().replace("`", "'")
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"


def deprecated(old: str, new: str) -> None:
    """Warn once per call site that setting ``old`` is now ``new``; the CLI renders the names as flags."""
    import warnings

    warnings.warn(f"`{old}` is deprecated, use `{new}` (same meaning); the old name will be removed",
                  EntropruneDeprecationWarning, stacklevel=4)


def _render(message: str, name: Callable[[str, str | None], str]) -> str:
    return SETTING.sub(lambda m: name(m.group(1), m.group(2)), message)


def as_flags(message: str, aliases: Mapping[str, str] | None = None) -> str:
    """The message with each setting written as the command line's flag: `` `flops_target` `` ->
    ``--flops-target``, `` `force=True` `` -> ``--force``, `` `distill=False` `` -> ``--no-distill``,
    `` `reward.kind='accuracy'` `` -> ``--reward accuracy`` (with ``aliases['reward.kind'] = 'reward'``)."""
    aliases = aliases or {}

    def flag(path: str, value: str | None) -> str:
        name = aliases.get(path) or aliases.get(path.rsplit(".", 1)[-1]) or path.rsplit(".", 1)[-1]
        dashed = name.replace("_", "-")
        if value == "True":
            return f"--{dashed}"
        if value == "False":
            return f"--no-{dashed}"
        return f"--{dashed}" if value is None else f"--{dashed} {value.strip(chr(39) + chr(34))}"

    return _render(message, flag)


def as_keys(message: str, where: str | Callable[[str], str] = "") -> str:
    """The message with each setting written as a YAML config key: `` `flops_target` `` ->
    ``'search.flops_target'`` (``where`` a prefix, or a function of the setting's path giving its key),
    `` `force=True` `` -> ``'force: true'``."""
    full = where if callable(where) else (lambda path: f"{where}.{path}" if where else path)

    def key(path: str, value: str | None) -> str:
        if value is None:
            return repr(full(path))
        value = value.lower() if value in ("True", "False") else value.strip(chr(39) + chr(34))
        return f"'{full(path)}: {value}'"

    return _render(message, key)
