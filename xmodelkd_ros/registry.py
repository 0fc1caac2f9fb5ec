"""Name -> entry registries for the package's extension points: the training's stage
kinds and datasets, the runtime's inference backends.

A new dataset, stage kind or backend is one class with a decorator above it
(``@DATASETS.register("name")``, ``@STAGE_KINDS.register(...)``, ``@register_backend``):
the recipe key / ``--stage`` / ``backend`` choices, the error message listing the known
names and the CLI help all come from the registry, so no ``if/elif`` chain has to grow.
A dict and a decorator: no dependency. It lives at the package's top so that training
and runtime share it without the runtime depending on the training code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, ValuesView
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; ``what`` names the setting in error messages."""

    def __init__(self, what: str, error: type[Exception] = KeyError) -> None:
        self.what = what
        self.error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name") class Foo: ...`` (duplicates are an error)."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry called ``name``, or ``self.error`` listing the known names."""
        if name not in self._entries:
            raise self.error(f"unknown {self.what} {name!r} ({' | '.join(self._entries)})")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        """Registration order (which is the order the CLI documents them in)."""
        return tuple(self._entries)

    def values(self) -> ValuesView[T]:
        """The entries, in registration order."""
        return self._entries.values()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
