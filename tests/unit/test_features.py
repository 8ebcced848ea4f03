from __future__ import annotations

import copy
import io
import pickle
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detectors.compiled import attributes
from detectors.features import FEATURE_SPECS, FeatureExtractor, FeatureSpec
from schemas.validation import EventValidator
from stream.traffic.config import TrafficConfig
from stream.traffic.generator import generate
from tests.unit.events import _PAYLOADS, make_event


@pytest.mark.parametrize("event_type", sorted(_PAYLOADS))
def test_every_event_type_yields_its_declared_features(event_type):
    features = FeatureExtractor(max_keys=100).extract(make_event(event_type))
    assert set(features) == {spec.name for spec in FEATURE_SPECS[event_type]}
    assert all(value >= 0.0 for value in features.values())


def test_extract_does_not_mutate_the_event():
    event = make_event("payment.attempted")
    before = copy.deepcopy(event)
    FeatureExtractor(max_keys=100).extract(event)
    assert event == before


def test_card_testing_signature_raises_new_cards_on_device():
    extractor = FeatureExtractor(max_keys=1000)
    features = {}
    for i in range(30):
        event = make_event(
            "payment.attempted", i, device="d-bad", card_fingerprint=f"c-{i}", amount=1.0
        )
        features = extractor.extract(event)
    assert features["device_new_cards_1h"] > 25
    normal = extractor.extract(make_event("payment.attempted", 31, device="d-ok", user="u-9"))
    assert normal["device_new_cards_1h"] == pytest.approx(1.0)


def test_login_from_new_device_and_country_is_flagged_only_for_known_users():
    extractor = FeatureExtractor(max_keys=1000)
    first = extractor.extract(make_event("account.login", 0, device="d-1", country="US"))
    assert first["new_device"] == 0.0  # nothing known yet: not "new"
    again = extractor.extract(make_event("account.login", 10, device="d-1", country="US"))
    assert again["new_device"] == 0.0
    takeover = extractor.extract(make_event("account.login", 20, device="d-9", country="BR"))
    assert takeover["new_device"] == 1.0
    assert takeover["new_country"] == 1.0


def test_amount_against_users_own_history():
    extractor = FeatureExtractor(max_keys=1000)
    for i in range(10):
        extractor.extract(make_event("order.placed", i, amount=20.0))
    big = extractor.extract(make_event("order.placed", 11, amount=800.0))
    assert big["amount_vs_user"] == pytest.approx(40.0)


def test_review_from_a_buyer_who_ordered():
    extractor = FeatureExtractor(max_keys=1000)
    stranger = extractor.extract(make_event("review.posted", 0, user="u-5", rating=1))
    assert stranger["reviewer_ordered"] == 0.0
    assert stranger["low_rating"] == 1.0
    extractor.extract(make_event("order.placed", 1, user="u-6"))
    buyer = extractor.extract(make_event("review.posted", 2, user="u-6"))
    assert buyer["reviewer_ordered"] == 1.0


def test_velocity_is_in_event_time_not_wall_clock():
    extractor = FeatureExtractor(max_keys=1000)
    extractor.extract(make_event("message.sent", 0, seconds=0))
    later = extractor.extract(make_event("message.sent", 1, seconds=10 * 3600))
    assert later["user_messages_1h"] == pytest.approx(1.0, abs=0.01)


def test_squash_maps_into_unit_interval():
    spec = FeatureSpec("x", 2.0)
    assert spec.squash(0.0) == 0.0
    assert spec.squash(2.0) == 0.5
    assert 0.0 <= spec.squash(1e12) < 1.0
    assert spec.squash(-5.0) == 0.0
    assert FeatureSpec("flag", None).squash(3.0) == 1.0


def test_a_new_device_or_country_stays_new_for_the_session_hour():
    fx = FeatureExtractor()
    fx.extract(make_event("account.login", seconds=0.0, device="d-home", country="US"))
    flags = []
    for seconds, device, country in [
        (100.0, "d-thief", "RU"),  # the takeover's login
        (1800.0, "d-thief", "RU"),  # its orders, half an hour on
        (1900.0, "d-home", "US"),  # the owner, meanwhile, from home
        (3500.0, "d-thief", "RU"),  # still within the hour
        (3800.0, "d-thief", "RU"),  # an hour after the first: known by now
    ]:
        event = make_event("order.placed", seconds=seconds, device=device, country=country)
        features = fx.extract(event)
        flags.append((features["new_device"], features["new_country"]))
    assert flags == [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0), (0.0, 0.0)]


# A checkpoint the extractor wrote before its per-user tables became one (``users``):
# 3,000 generated events (seed 12) into FeatureExtractor(1_000_000), pickled and zlib'ed.
_SIX_TABLES = Path(__file__).parent / "data" / "extractor-six-user-tables.pickle.zlib"


def _generated(count: int, seed: int) -> list[dict[str, Any]]:
    validator = EventValidator()
    decoded = (validator.decode(r.value) for r in generate(TrafficConfig(events=count, seed=seed)))
    return [event for event in decoded if isinstance(event, dict)]


class _OldState:
    """Stands in for the extractor while a checkpoint is read: keeps its state as is."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


def _old_state() -> dict[str, Any]:
    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return _OldState if name == "FeatureExtractor" else super().find_class(module, name)

    raw = zlib.decompress(_SIX_TABLES.read_bytes())
    state: dict[str, Any] = Unpickler(io.BytesIO(raw)).load().state
    return state


def test_a_checkpoint_with_the_six_per_user_tables_goes_on_as_if_never_stopped():
    events = _generated(4_000, seed=12)
    old_state = _old_state()
    assert "user_devices" in old_state
    assert "users" not in old_state
    restored = pickle.loads(zlib.decompress(_SIX_TABLES.read_bytes()))
    uninterrupted = FeatureExtractor(1_000_000)
    for event in events[:3_000]:
        uninterrupted.extract(event)
    assert list(restored.users._data) == list(uninterrupted.users._data)  # and LRU order
    assert [restored.extract(e) for e in events[3_000:]] == [
        uninterrupted.extract(e) for e in events[3_000:]
    ]
    # The same users' entries, field by field (a restored set may iterate in another order).
    assert _users(restored) == _users(uninterrupted)


def _users(extractor: FeatureExtractor) -> list[tuple[Any, ...]]:
    return [
        (user, *(frozenset(v) if type(v) is set else v for v in attributes(record).values()))
        for user, record in extractor.users._data.items()
    ]


def test_a_checkpoint_from_before_session_newness_restores():
    state = _old_state()
    del state["user_new_device"], state["user_new_country"]
    old = FeatureExtractor.__new__(FeatureExtractor)
    old.__setstate__(state)
    user, last = next(reversed(state["user_first_seen"]._table._data.items()))
    event = make_event("account.login", seconds=0.0, user=user, device="d-new")
    event["occurred_at"] = (
        datetime.fromtimestamp(last + 60.0, UTC).isoformat().replace("+00:00", "Z")
    )
    assert old.extract(event)["new_device"] == 1.0
    assert old.extract(event)["new_device"] == 1.0  # and stays new for the session
