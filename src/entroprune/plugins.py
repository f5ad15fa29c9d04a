"""Code of your own (a model, a dataset, a reward) that the commands use by name.

A plugin is a ``.py`` file or an importable module that registers what it adds with
:func:`entroprune.register_model`, :func:`entroprune.data.register_dataset` or
:func:`entroprune.search.rewards.register_reward`. Importing it runs its code, so it is imported only
when the user names it: ``entroprune --plugin my_models.py ...`` or ``$ENTROPRUNE_PLUGINS``. Checkpoints
stay weights-only: they name a registered model, and loading one never imports anything it names.

The plugins named here are written to ``$ENTROPRUNE_PLUGINS`` and their folders to ``$PYTHONPATH``, so
the processes a command starts (fresh latency timings, data-parallel fine-tune workers, Ray actors)
import the same code: by name when they unpickle a model, or when a checkpoint names a model or a
dataset they do not know.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Container, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import ConfigError, one_line

ENV = "ENTROPRUNE_PLUGINS"
V = TypeVar("V")


def named_plugins() -> list[str]:
    """The plugins ``$ENTROPRUNE_PLUGINS`` names (separated by the path separator, ``:`` on Linux)."""
    return [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]


def load_plugins(plugins: Sequence[str] | None = None, export: bool = False) -> list[str]:
    """Import each plugin once (``None``: those ``$ENTROPRUNE_PLUGINS`` names); returns their module names.

    ``export``: also name them in the environment, for the processes this one starts.
    """
    items = named_plugins() if plugins is None else [str(p) for p in plugins]
    modules = [_import(item) for item in items]
    if export and items:
        resolved = [_absolute(i) for i in [*named_plugins(), *items]]
        os.environ[ENV] = os.pathsep.join(dict.fromkeys(resolved))
        folders = [str(Path(i).parent) for i in resolved if i.endswith(".py")]
        if folders:
            path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in dict.fromkeys([*folders, *path]) if p)
    return modules


def load_for(name: str, known: Container[str]) -> bool:
    """``name`` is not in ``known`` (a registry): import the environment's plugins (a process a command started, or a
    library user who set the variable) and say whether that registered it."""
    if not named_plugins():
        return False
    load_plugins()
    return name in known


REGISTERS = {"model": "entroprune.register_model", "dataset": "entroprune.data.register_dataset",
             "reward": "entroprune.search.rewards.register_reward"}


def unknown_hint(kind: str) -> str:
    """How a name of one's own becomes known, for the error that lists the known ones."""
    return (f"a {kind} of your own: register it in a plugin ({REGISTERS[kind]}) and name the plugin "
            f"(`entroprune --plugin FILE.py` on the command line, entroprune.load_plugins in Python, or ${ENV})")


class Registry(dict[str, V]):
    """Things the commands take by name (models, datasets, rewards).

    A name not here is looked up once more after importing the plugins the environment names, so that a
    process a command started, or a library user who set ``$ENTROPRUNE_PLUGINS``, knows the same names as
    the command; the error for a name still unknown lists the known ones and says how to add one.
    """

    def __init__(self, kind: str, entries: Mapping[str, V] | None = None) -> None:
        super().__init__(entries or {})
        self.kind = kind  # "model", "dataset" or "reward": a key of REGISTERS

    def knows(self, name: str) -> bool:
        return name in self or load_for(name, self)

    def unknown(self, name: str, label: str | None = None) -> str:
        """The one line for a name neither registered nor registered by the environment's plugins."""
        return (f"unknown {label or self.kind} {name!r}; choose one of {', '.join(self)}, "
                f"or {unknown_hint(self.kind)}")

    def require(self, name: str, error: type[Exception] = ConfigError, label: str | None = None) -> V:
        """The entry for ``name``, or ``error`` saying it is unknown (``label``: what the name was given as)."""
        if not self.knows(name):
            raise error(self.unknown(name, label))
        return self[name]


def _absolute(item: str) -> str:
    """A file named as a child process in another folder finds it."""
    return str(Path(item).resolve()) if item.endswith(".py") else item


def _import(item: str) -> str:
    """Import a ``.py`` file by its stem, from its folder, as a child process imports it again by name."""
    if item.endswith(".py"):
        path = Path(item).resolve()
        if not path.is_file():
            raise ConfigError(f"plugin {item} does not exist; pass a .py file or an importable module name")
        name, folder = path.stem, str(path.parent)
        loaded = sys.modules.get(name)
        if loaded is not None:
            if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
                return name
            raise ConfigError(f"plugin {item} is named like the already imported module {name!r}; rename the file")
        if folder not in sys.path:
            sys.path.insert(0, folder)
    else:
        name = item
        if name in sys.modules:
            return name
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the user's file
    try:
        importlib.import_module(name)
    except ConfigError as exc:  # e.g. a zoo name taken: entroprune's own message, said of this plugin
        raise ConfigError(f"plugin {item}: {exc}") from None
    except Exception as exc:  # the plugin's own code: any error it raises is its author's to fix
        raise ConfigError(f"plugin {item} failed to import ({one_line(exc)}); fix it or leave it out") from None
    finally:
        sys.dont_write_bytecode = dont_write
    return name


__all__ = ["ENV", "Registry", "load_plugins", "named_plugins", "load_for", "unknown_hint"]
