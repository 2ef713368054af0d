"""`agent.ul.values.value`: the protocol core's value classes behave as frozen slotted dataclasses."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import ClassVar

import pytest

from agent.ul.values import value


@value
class Point:
    """A positional value with a default, a factory and a check."""

    LIMIT: ClassVar[int] = 100
    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.x > self.LIMIT:
            raise ValueError("x too large")


@value(kw_only=True)
class Base:
    """Keyword-only fields."""

    a: int
    b: str | None = None


@value(kw_only=True)
class Child(Base):
    """Inherits a and b, adds c."""

    c: bool = True


def test_construction_defaults_factory_and_post_init() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, ())
    assert Point(2, 3, ("t",)) == Point(x=2, y=3, tags=("t",))
    with pytest.raises(ValueError, match="too large"):
        Point(101)
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]


def test_keyword_only_and_inheritance() -> None:
    c = Child(a=1, c=False)
    assert (c.a, c.b, c.c) == (1, None, False)
    with pytest.raises(TypeError):
        Child(1)  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(Child)] == ["a", "b", "c"]
    assert Child.__slots__ == ("c",) and Base.__slots__ == ("a", "b")
    assert Child.__match_args__ == () and Point.__match_args__ == ("x", "y", "tags")


def test_frozen_equality_hash_repr() -> None:
    p = Point(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.y
    with pytest.raises(AttributeError):
        p.z = 1  # type: ignore[attr-defined]
    assert p == Point(1, 2) and p != Point(1, 3) and hash(p) == hash(Point(1, 2))
    assert Base(a=1) != Child(a=1)  # only exactly the same class compares equal
    assert repr(p) == "Point(x=1, y=2, tags=())"
    assert {p, Point(1, 2)} == {p}


def test_dataclass_functions_copy_and_pickle() -> None:
    p = Point(1, 2, ("a",))
    assert dataclasses.is_dataclass(p)
    assert dataclasses.replace(p, y=5) == Point(1, 5, ("a",))
    assert dataclasses.asdict(Child(a=1)) == {"a": 1, "b": None, "c": True}
    assert copy.copy(p) == p and copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(Child(a=3, b="x"))) == Child(a=3, b="x")


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="follows default"):

        @value
        class Bad:
            a: int = 0
            b: int
