"""The overlay's clip store: its bounds, its clean-up and its id checks."""

from __future__ import annotations

import pytest

from obs_overlay.clip_store import ClipStore, is_valid_clip_id, new_clip_id
from pipeline.errors import InputError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_ids_are_valid_and_unique() -> None:
    ids = {new_clip_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_valid_clip_id(clip_id) for clip_id in ids)


@pytest.mark.parametrize(
    "clip_id",
    [
        "",
        "..",
        "../../etc/passwd",
        "/etc/passwd",
        "abc/defghij",
        "abcdefgh.mp4",
        "abcdefg\x00h",
        "abc%2Fdefgh",
        "äbcdefghij",
        "short",
        "a" * 65,
        "C:\\Windows\\x",
    ],
)
def test_malformed_ids_are_refused(clip_id: str) -> None:
    store = ClipStore()
    assert not is_valid_clip_id(clip_id)
    assert store.get(clip_id) is None
    with pytest.raises(InputError):
        store.put(b"data", clip_id=clip_id)


def test_count_bound_evicts_the_oldest() -> None:
    store = ClipStore(max_clips=3)
    ids = [store.put(bytes([n]) * 10)[0] for n in range(3)]
    clip_id, evicted = store.put(b"newest")
    assert evicted == [ids[0]]
    assert store.get(ids[0]) is None
    assert store.get(clip_id) == b"newest"
    assert len(store) == 3


def test_size_bound_evicts_until_it_fits() -> None:
    store = ClipStore(max_bytes=100)
    first, _ = store.put(b"a" * 40)
    second, _ = store.put(b"b" * 40)
    third, evicted = store.put(b"c" * 50)
    assert evicted == [first]
    assert store.total_bytes == 90
    assert store.get(second) == b"b" * 40 and store.get(third) == b"c" * 50


def test_a_clip_larger_than_the_store_is_refused() -> None:
    store = ClipStore(max_bytes=100)
    with pytest.raises(InputError, match="store_max_mb"):
        store.put(b"x" * 101)
    with pytest.raises(InputError):
        store.put(b"")
    assert len(store) == 0


def test_age_bound_hides_and_prunes_old_clips() -> None:
    clock = Clock()
    store = ClipStore(max_age_s=60, clock=clock)
    old, _ = store.put(b"old")
    clock.now += 30
    young, _ = store.put(b"young")
    clock.now += 31
    assert store.get(old) is None, "an expired clip is not served even before the clean-up"
    assert store.get(young) == b"young"
    assert store.prune() == [old]
    assert len(store) == 1 and store.total_bytes == len(b"young")


def test_discard_and_clear() -> None:
    store = ClipStore()
    clip_id, _ = store.put(b"abc")
    store.discard(clip_id)
    store.discard(clip_id)
    assert clip_id not in store and store.total_bytes == 0
    store.put(b"abc")
    store.clear()
    assert len(store) == 0 and store.total_bytes == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClipStore(max_clips=0)
