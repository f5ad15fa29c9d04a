"""Packages whose names are imported on first use (PEP 562), so that importing `entroprune` and its command
line does not import torch: `entroprune --help` answers at once, and a command imports what it runs."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str], names: list[str]) -> tuple[Callable[[str], Any],
                                                                                  Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``homes`` maps each public name to the submodule (relative
    to ``package``) that defines it; a submodule's own name imports it, as an imported submodule would be
    there (``ep.data.register_dataset`` after ``import entroprune as ep``, as the README writes it)."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in homes:
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f".{name}", package)  # importing binds it in the namespace
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{homes[name]}", package), name)
        namespace[name] = value  # once imported, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
