"""Named parts (guidance types, representations, systems): one registry per kind of part.

A registry maps a name to an entry. Entries register themselves when their module is imported
(`Registry.register`); a registry that names a package imports every module of it on the first
lookup, so adding a part is adding a file to that package (or importing one's own module before
the run, e.g. in a test). Unknown names are a UserError naming the known ones and the nearest.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from gen3d.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None):
        """kind: what a name names, for messages ("guidance type"); package: discovered on first use."""
        self.kind, self.package = kind, package
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str, entry: T | None = None, replace: bool = False):
        """`register(name, entry)`, or `@register(name)` over a class or function (returned unchanged)."""

        def add(value: T) -> T:
            if name in self._entries and not replace and self._entries[name] is not value:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = value
            return value

        return add(entry) if entry is not None else add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str, key: str | None = None) -> T:
        """The entry of `name`; UserError naming the known names and the nearest one. key: the config
        key that gave the name, for the message."""
        self._discover()
        if name in self._entries:
            return self._entries[name]
        known = self.names()
        near = difflib.get_close_matches(str(name), known, n=1, cutoff=0.4)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        where = f"{key}: " if key else ""
        raise UserError(f"{where}unknown {self.kind} '{name}' (known: {', '.join(known)}{hint})")

    def where(self, test: Callable[[T], bool]) -> list[str]:
        """Names whose entry passes `test` (e.g. representations a method may start with)."""
        return [n for n in self.names() if test(self._entries[n])]
