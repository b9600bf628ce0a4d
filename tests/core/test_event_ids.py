"""Event ids are `<tenant>:<UUIDv7>`: unique, and in creation order so stores index them at the b-tree's end."""

from __future__ import annotations

import time
import uuid

import pytest

from thoth_nb import _flow


@pytest.mark.parametrize("fast", [True, False], ids=["uuid-utils", "stdlib"])
def test_event_uuids_are_version_7_and_time_ordered(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(_flow, "_uuid7", None)
    ids = []
    for i in range(50):
        ids.append(_flow._new_uuid())
        if i % 10 == 9:
            time.sleep(0.002)  # cross millisecond boundaries: the stdlib fallback orders by millisecond only
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(ids)) == len(ids)
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
    assert abs(millis[-1] - time.time_ns() // 1_000_000) < 5_000
