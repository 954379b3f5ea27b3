"""The hand-out and update bodies are checked without a serializer when well formed; whatever
that shortcut accepts, the serializer accepts with the same result, and what it leaves, the
serializer decides (its error details)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from farm.api.views import (
    TaskBatchClaimApi,
    TaskBatchDoneApi,
    TaskDetailApi,
    WorkerInputSerializer,
    _worker_uuid_of,
    batch_shortcut,
    count_ok,
    numbers_ok,
    plain_change,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["waiting", "computing", "done", "Done", ""]),
    st.text(max_size=70),
)
json_values = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=2), st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)
)
put_bodies = st.one_of(
    st.dictionaries(st.sampled_from(["percentCompleted", "status", "other"]), json_values, max_size=3),
    st.fixed_dictionaries(
        {},
        optional={
            "percentCompleted": st.floats(0, 100) | st.integers(0, 100),
            "status": st.sampled_from(["waiting", "computing", "done"]),
        },
    ),
    json_values,
)
worker_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "worker_uuid": st.one_of(
                st.text(max_size=70), st.from_regex(r"[A-Za-z0-9._~:@+\-]{1,64}", fullmatch=True), json_scalars
            )
        }
    ),
    json_values,
)


@settings(max_examples=400, deadline=None)
@given(put_bodies)
def test_put_shortcut_agrees_with_the_serializer(body: Any) -> None:
    change = plain_change(body)
    if change is None:
        return
    serializer = TaskDetailApi.InputSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert change.percent_completed == serializer.validated_data.get("percentCompleted")
    assert change.status == serializer.validated_data.get("status")


@settings(max_examples=400, deadline=None)
@given(worker_bodies)
def test_claim_shortcut_agrees_with_the_serializer(body: Any) -> None:
    serializer = WorkerInputSerializer(data=body)
    if serializer.is_valid():
        assert _worker_uuid_of(body) == serializer.validated_data["worker_uuid"]
    else:
        with pytest.raises(ValidationError):
            _worker_uuid_of(body)


def test_the_shortcuts_take_the_bodies_the_client_sends() -> None:
    assert plain_change({"percentCompleted": 100}) is not None
    assert plain_change({"status": "done"}) is not None
    assert _worker_uuid_of({"worker_uuid": "0f5e0c0a3c1b11efa7a1c8d9d2a8a7b1"}) == "0f5e0c0a3c1b11efa7a1c8d9d2a8a7b1"
    assert plain_change({"percentCompleted": 101}) is None
    assert plain_change({"percentCompleted": True}) is None
    assert plain_change({"status": "finished"}) is None
    assert plain_change({"status": "done", "extra": 1}) is None
    assert plain_change({}) is None


numbers = st.lists(
    st.one_of(st.integers(min_value=-5, max_value=2**63), st.booleans(), st.floats(0, 10), st.none()), max_size=5
)
batch_claim_bodies = st.one_of(
    st.fixed_dictionaries(
        {
            "worker_uuid": worker_bodies.map(lambda body: body.get("worker_uuid") if isinstance(body, dict) else body),
            "count": st.one_of(st.integers(min_value=-3, max_value=100_003), json_scalars),
        }
    ),
    json_values,
)
batch_done_bodies = st.one_of(
    st.fixed_dictionaries({"worker_uuid": st.sampled_from(["w", "w w", 7]), "tasks": st.one_of(numbers, json_values)}),
    json_values,
)


@pytest.mark.parametrize(
    ("key", "value_ok", "serializer_class", "bodies"),
    [
        ("count", count_ok, TaskBatchClaimApi.InputSerializer, batch_claim_bodies),
        ("tasks", numbers_ok, TaskBatchDoneApi.InputSerializer, batch_done_bodies),
    ],
    ids=["claim", "done"],
)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_batch_shortcuts_agree_with_the_serializers(
    key: str, value_ok: Any, serializer_class: Any, bodies: Any, data: Any
) -> None:
    body = data.draw(bodies)
    given_ = batch_shortcut(body, key, value_ok)
    if given_ is not None:
        serializer = serializer_class(data=body)
        assert serializer.is_valid(), serializer.errors
        assert given_ == (serializer.validated_data["worker_uuid"], serializer.validated_data[key])


def test_the_batch_shortcuts_take_the_bodies_a_batch_client_sends() -> None:
    assert batch_shortcut({"worker_uuid": "w1", "count": 100}, "count", count_ok) == ("w1", 100)
    assert batch_shortcut({"worker_uuid": "w1", "tasks": [3, 1, 2]}, "tasks", numbers_ok) == ("w1", [3, 1, 2])
    assert batch_shortcut({"worker_uuid": "w1", "count": True}, "count", count_ok) is None
    assert batch_shortcut({"worker_uuid": "w1", "tasks": [1, -1]}, "tasks", numbers_ok) is None
