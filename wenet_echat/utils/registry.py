"""One registry per component kind: a YAML key names a class, the registry builds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    >>> FEATS = Registry("features")
    >>> @FEATS.register("log_mel")
    ... def make(**conf): ...
    >>> FEATS.build("log_mel", {"n_mels": 80})
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} '{name}'; known: {known}") from None

    def build(self, name: str, conf: dict[str, Any] | None = None, **extra: Any) -> T:
        factory = self.get(name)
        try:
            return factory(**(conf or {}), **extra)
        except TypeError as e:
            raise TypeError(f"bad config for {self.kind} '{name}': {e}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
