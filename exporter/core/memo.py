"""Keys of Snapshot.memo: what a collector or view computes once per snapshot."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class MemoKey(Generic[T]):
    """A key of Snapshot.memo, holding a T: one object per thing computed (compared by identity),
    so that two collectors never share an entry by giving the same name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"MemoKey({self.name!r})"
