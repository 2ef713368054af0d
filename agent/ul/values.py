"""`@value`: what `@dataclass(frozen=True, slots=True)` makes of a class, for a fraction of its import cost.

Why: the protocol core defines some sixty small value classes (PDUs and their items, association
events, negotiation results, DIMSE messages), and every `dicom-agent store` run imports all of them.
`dataclass` compiles six functions per class when the module is imported (__init__, __repr__, __eq__,
__hash__, __setattr__, __delattr__: about 0.45 ms a class, 30 ms a start). Here __eq__, __hash__,
__repr__, __setattr__, __delattr__ and the pickling hooks are shared functions, and __init__, the one
that must be fast, is compiled the first time the class is instantiated, to the same code dataclass
writes (so constructing one costs what it did).

Invariants (what callers and tests may rely on, as with a frozen slotted dataclass):
- Fields come from the class's own annotations (a `ClassVar[...]` annotation is not a field), after
  those of its `@value` or dataclass bases, in order; a field's default is its class attribute, or
  `dataclasses.field(default=..., default_factory=...)`. `kw_only=True` makes the class's own fields
  keyword-only; a field without a default after one with a default (both positional) is a TypeError.
- `__init__` sets the fields in order and then calls `__post_init__` when the class has one.
- Instances are immutable: assigning or deleting any attribute raises `dataclasses.FrozenInstanceError`.
- `==` compares the field values in order between instances of exactly the same class; `hash` is
  the hash of that tuple; `repr` is `Name(field=value, ...)`; `__match_args__` names the positional fields.
- `dataclasses.fields`, `replace`, `asdict` and `is_dataclass` work (`__dataclass_fields__` holds real
  `Field` objects); copy and pickle work.
- The class returned is a new class with `__slots__` for its own fields (as `slots=True` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar

__all__ = ["value"]

_T = TypeVar("_T", bound=type)
_MISSING = dataclasses.MISSING
_FIELD = dataclasses._FIELD  # type: ignore[attr-defined]  # the marker fields() filters on


class _HasDefaultFactory:
    def __repr__(self) -> str:
        return "<factory>"


_HAS_DEFAULT_FACTORY = _HasDefaultFactory()


def value(cls: _T | None = None, /, *, kw_only: bool = False) -> Any:
    """Class decorator: `@value` or `@value(kw_only=True)` (see the module docstring)."""

    def wrap(c: _T) -> _T:
        return _process(c, kw_only)

    return wrap if cls is None else wrap(cls)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _process(cls: type, kw_only: bool) -> Any:
    fields: dict[str, dataclasses.Field[Any]] = {}
    for base in cls.__mro__[-1:0:-1]:
        inherited = getattr(base, "__dataclass_fields__", None)
        if inherited:
            fields.update(inherited)
    inherited_names = set(fields)
    namespace = dict(cls.__dict__)
    own: list[str] = []
    for name, annotation in namespace.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        default = namespace.pop(name, _MISSING)
        if isinstance(default, dataclasses.Field):
            f = default
            if f.kw_only is _MISSING:
                f.kw_only = kw_only
        else:
            f = dataclasses.field(default=default, kw_only=kw_only)
        f.name, f.type = name, annotation
        f._field_type = _FIELD  # type: ignore[attr-defined]
        fields[name] = f
        if name not in inherited_names:
            own.append(name)
    names = tuple(fields)
    positional = [f for f in fields.values() if not f.kw_only]
    seen_default = False
    for f in positional:
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if seen_default and not has_default:
            raise TypeError(f"{cls.__name__}: non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default

    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = tuple(own)
    namespace["__dataclass_fields__"] = fields
    namespace["__match_args__"] = tuple(f.name for f in positional)
    namespace["_value_names"] = names
    namespace["_value_get"] = staticmethod(_getter(names))
    for shared in (_eq, _hash, _repr, _setattr, _delattr, _getstate, _setstate):
        namespace.setdefault(shared.__name__, shared)
    new = type(cls)(cls.__name__, cls.__bases__, namespace)
    new.__qualname__ = cls.__qualname__
    new.__init__ = _lazy_init(new)  # type: ignore[misc]
    return new


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda self: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda self: (one(self),)
    return attrgetter(*names)  # type: ignore[return-value]


# ---------------------------------------------------------------- shared methods


def __eq__(self: Any, other: object) -> bool:  # noqa: N807
    if other.__class__ is self.__class__:
        return bool(self._value_get(self) == other._value_get(other))
    return NotImplemented


def __hash__(self: Any) -> int:  # noqa: N807
    return hash(self._value_get(self))


def __repr__(self: Any) -> str:  # noqa: N807
    body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._value_names)
    return f"{self.__class__.__qualname__}({body})"


def __setattr__(self: Any, name: str, value: Any) -> None:  # noqa: N807
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def __delattr__(self: Any, name: str) -> None:  # noqa: N807
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def __getstate__(self: Any) -> tuple[Any, ...]:  # noqa: N807
    return self._value_get(self)  # type: ignore[no-any-return]


def __setstate__(self: Any, state: tuple[Any, ...]) -> None:  # noqa: N807
    for name, v in zip(self._value_names, state, strict=True):
        object.__setattr__(self, name, v)


_eq, _hash, _repr, _setattr, _delattr, _getstate, _setstate = (
    __eq__, __hash__, __repr__, __setattr__, __delattr__, __getstate__, __setstate__,
)
del __eq__, __hash__, __repr__, __setattr__, __delattr__, __getstate__, __setstate__


# ---------------------------------------------------------------- __init__, compiled on first use


def _lazy_init(cls: type) -> Callable[..., None]:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        if cls.__dict__.get("__init__") is __init__:
            type.__setattr__(cls, "__init__", _compile_init(cls))
        cls.__init__(self, *args, **kwargs)  # type: ignore[misc]

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _compile_init(cls: type) -> Callable[..., None]:
    """The __init__ dataclass would write for a frozen class (object.__setattr__ per field)."""
    fields = list(cls.__dataclass_fields__.values())  # type: ignore[attr-defined]
    env: dict[str, Any] = {"__object_setattr": object.__setattr__, "__factory": _HAS_DEFAULT_FACTORY}
    params: list[str] = []
    kw_params: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.default_factory is not _MISSING:
            env[f"__dflt_{f.name}"] = f.default_factory
            param = f"{f.name}=__factory"
            body.append(f"  __object_setattr(self, {f.name!r}, __dflt_{f.name}() if {f.name} is __factory else {f.name})")
        else:
            if f.default is not _MISSING:
                env[f"__dflt_{f.name}"] = f.default
                param = f"{f.name}=__dflt_{f.name}"
            else:
                param = f.name
            body.append(f"  __object_setattr(self, {f.name!r}, {f.name})")
        (kw_params if f.kw_only else params).append(param)
    if hasattr(cls, "__post_init__"):
        body.append("  self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *kw_params] if kw_params else [])])
    source = f"def __init__({signature}):\n" + ("\n".join(body) or "  pass") + "\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<value {cls.__qualname__}.__init__>", "exec"), env, namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init  # type: ignore[no-any-return]
