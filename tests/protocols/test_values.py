"""quick_init: the same frozen value as the dataclass would build, or a refusal."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from protocols.values import quick_init


@dataclasses.dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class _Quick:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


def test_same_signature_fields_and_value_semantics() -> None:
    assert str(inspect.signature(_Quick)) == str(inspect.signature(_Plain))
    for args, kwargs in (((1,), {}), ((1, "x"), {}), ((), {"a": 2, "c": (3,)})):
        q, p = _Quick(*args, **kwargs), _Plain(*args, **kwargs)
        assert dataclasses.astuple(q) == dataclasses.astuple(p)
        assert q == _Quick(*args, **kwargs) and hash(q) == hash(_Quick(*args, **kwargs))
    with pytest.raises(dataclasses.FrozenInstanceError):
        _Quick(1).a = 2  # type: ignore[misc]
    assert dataclasses.replace(_Quick(1), b="y") == _Quick(1, "y")
    with pytest.raises(TypeError):
        _Quick()  # type: ignore[call-arg]


def test_keyword_only_fields_stay_keyword_only() -> None:
    @quick_init
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class K:
        a: int = 0

    assert K(a=3).a == 3
    with pytest.raises(TypeError):
        K(3)  # type: ignore[misc]


def test_refuses_what_it_cannot_build_the_same() -> None:
    with pytest.raises(TypeError, match="items"):
        @quick_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class F:
            items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="not a slot"):
        @quick_init
        @dataclasses.dataclass(frozen=True)
        class NoSlots:
            a: int = 1
