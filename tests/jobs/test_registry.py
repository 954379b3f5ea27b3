"""Argument validation against annotations, for each supported kind and both dialects."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.errors import ArgumentError
from jobs.registry import build_kwargs, get_spec, validate_args
from tests.jobs.sample_jobs import Colour, Point

GOOD: dict[str, Any] = {
    "n": 3,
    "ratio": 0.5,
    "label": "x",
    "flag": True,
    "items": [1, 2, 3],
    "mapping": {"a": 1.5},
    "maybe": None,
    "mode": "fast",
    "colour": "red",
    "point": {"x": 1, "y": 2},
    "options": {"name": "n", "size": 2},
}


def kinds_spec():
    spec = get_spec("tests.kinds")
    assert spec is not None
    return spec


def test_valid_arguments_of_every_kind_are_accepted_and_built() -> None:
    spec = kinds_spec()
    assert validate_args(spec, GOOD, strict=True) == GOOD
    kwargs = build_kwargs(spec, GOOD)
    assert kwargs["colour"] is Colour.RED
    assert kwargs["point"] == Point(1, 2)
    assert kwargs["options"] == {"name": "n", "size": 2}
    assert spec.func(**kwargs)["sum"] == 6


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", "3"),
        ("n", 1.0),
        ("n", True),
        ("n", 2**70),
        ("ratio", "0.5"),
        ("label", 5),
        ("flag", 1),
        ("flag", "true"),
        ("items", [1, "2"]),
        ("items", {"a": 1}),
        ("mapping", {"a": "x"}),
        ("mapping", [1]),
        ("maybe", "1"),
        ("mode", "medium"),
        ("mode", 1),
        ("colour", "green"),
        ("point", {"x": "1"}),
        ("point", {"y": 1}),
        ("point", {"x": 1, "z": 3}),
        ("point", [1, 2]),
        ("options", {"name": "n"}),
        ("options", {"name": "n", "size": "2"}),
        ("options", {"name": "n", "size": 1, "o": 1}),
        ("nickname", 3),
    ],
)
def test_each_kind_rejects_wrong_values(param: str, value: Any) -> None:
    with pytest.raises(ArgumentError) as info:
        validate_args(kinds_spec(), {**GOOD, param: value}, strict=False)
    assert info.value.kind == "type"
    assert info.value.param == param
    assert info.value.message.startswith(f"the passed param {param} doesnt match the required type:")


def test_pytasks_dialect_is_exact_about_floats_booklogr_is_lenient() -> None:
    spec = kinds_spec()
    with pytest.raises(ArgumentError):
        validate_args(spec, {**GOOD, "ratio": 1}, strict=True)
    assert validate_args(spec, {**GOOD, "ratio": 1}, strict=False)["ratio"] == 1
    assert build_kwargs(spec, {**GOOD, "ratio": 1})["ratio"] == 1.0
    # true is never an int, in either dialect
    for strict in (True, False):
        with pytest.raises(ArgumentError):
            validate_args(spec, {**GOOD, "n": True}, strict=strict)


def test_missing_and_extra_arguments_in_pytasks_order() -> None:
    spec = kinds_spec()
    missing = {k: v for k, v in GOOD.items() if k != "label"}
    with pytest.raises(ArgumentError) as info:
        validate_args(spec, {**missing, "bogus": 1}, strict=True)
    assert info.value.kind == "missing"
    assert info.value.message == "the required param label was not passed. "
    with pytest.raises(ArgumentError) as info:
        validate_args(spec, {**GOOD, "bogus": 1}, strict=True)
    assert info.value.message == "the passed param bogus is not required."
    # optional parameters with defaults may be left out
    assert "nickname" not in validate_args(spec, GOOD, strict=True)


def test_arguments_must_be_an_object() -> None:
    with pytest.raises(ArgumentError):
        validate_args(kinds_spec(), [1, 2], strict=True)


def test_pytasks_example_pack_and_context_parameter_is_not_an_argument() -> None:
    add = get_spec("test.main.add")
    assert add is not None and [p.name for p in add.params] == ["x", "y"]
    export = get_spec("csv_export")
    assert export is not None and export.context_param == "ctx"
    assert [p.name for p in export.params] == ["datasets", "everything"]
    with pytest.raises(ArgumentError):
        validate_args(export, {"datasets": ["books"]}, strict=False)


def test_nul_characters_are_refused_anywhere_in_the_arguments() -> None:
    spec = kinds_spec()
    for value in ({**GOOD, "label": "a\x00b"}, {**GOOD, "mapping": {"k\x00": 1.0}}):
        with pytest.raises(ArgumentError):
            validate_args(spec, value, strict=True)


def test_queue_names_and_max_running_are_checked_at_registration() -> None:
    from jobs.registry import register

    def f() -> None:
        return None

    for bad in ["Exports", "a b", "", "x" * 64, "a,b"]:
        with pytest.raises(ValueError):
            register(f, name="tests.bad_queue", queue=bad)
    with pytest.raises(ValueError):
        register(f, name="tests.bad_limit", max_running=0)
