"""Injected attacks carry their labels and the signatures a detector should find."""

from __future__ import annotations

import functools
import re
import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

import orjson

from stream.traffic import ATTACK_TYPES, TrafficConfig, generate
from stream.traffic.vocab import BAIT_TITLE_DECORATIONS, CATEGORIES

CONFIG = TrafficConfig(events=40_000, seed=21, attack_rate=5e-4, events_per_day=20_000)
HOUR_S = 3600.0


@functools.cache
def labelled_events() -> tuple[tuple[dict[str, Any], str | None, str | None], ...]:
    return tuple((orjson.loads(r.value), r.attack, r.attack_id) for r in generate(CONFIG))


@functools.cache
def instances(attack: str) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event, kind, attack_id in labelled_events():
        if kind == attack and attack_id is not None:
            grouped[attack_id].append(event)
    return dict(grouped)


def normal_events() -> list[dict[str, Any]]:
    return [event for event, kind, _ in labelled_events() if kind is None]


def seconds(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def undecorated(title: str) -> str:
    for decoration in BAIT_TITLE_DECORATIONS:
        if decoration and title.endswith(decoration):
            return title.removesuffix(decoration)
    return title


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def test_every_attack_type_appears_with_numbered_instances():
    expected = CONFIG.attack_instances_per_type()
    assert expected == 20
    for attack in ATTACK_TYPES:
        ids = instances(attack)
        assert sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])) == [
            f"{attack}-{n}" for n in range(1, expected + 1)
        ]
    for _, kind, attack_id in labelled_events():
        if attack_id is not None:
            assert re.fullmatch(rf"{kind}-[0-9]+", attack_id)


def test_attacks_are_a_small_share_interleaved_with_normal_traffic():
    labels = [kind for _, kind, _ in labelled_events()]
    share = sum(kind is not None for kind in labels) / len(labels)
    assert 0.01 < share < 0.2
    for attack in ATTACK_TYPES:
        for events in instances(attack).values():
            assert 5 <= len(events) <= 250


def test_card_testing_signature():
    for attack_id, events in instances("card_testing").items():
        payments = of_type(events, "payment.attempted")
        assert len(payments) >= 30, attack_id
        fingerprints = {p["payload"]["card_fingerprint"] for p in payments}
        assert len(fingerprints) == len(payments)  # a new card every time
        assert len({p["payload"]["card_bin"] for p in payments}) <= 3
        assert all(0.5 <= p["payload"]["amount"] <= 5.0 for p in payments)
        declined = sum(p["payload"]["outcome"] == "declined" for p in payments)
        assert declined / len(payments) > 0.6
        devices = {e["context"]["device_id"] for e in events}
        ips = {e["context"]["ip"] for e in events}
        assert len(devices) == 1 or len(ips) == 1
        users = {e["entities"]["user_id"] for e in events}
        created = {e["entities"]["user_id"] for e in of_type(events, "account.created")}
        assert users == created
        assert len(users) <= 5  # a handful of fresh accounts
        assert seconds(events[-1]) - seconds(events[0]) < HOUR_S  # a burst of minutes


def test_account_takeover_signature():
    normal = normal_events()
    for attack_id, events in instances("account_takeover").items():
        users = {e["entities"]["user_id"] for e in events}
        assert len(users) == 1
        victim = users.pop()
        started = seconds(events[0])
        history = [e for e in normal if e["entities"]["user_id"] == victim]
        before = [e for e in history if seconds(e) < started]
        assert before, f"{attack_id}: the victim is an established user"
        assert not of_type(events, "account.created")
        usual_devices = {e["context"]["device_id"] for e in history}
        usual_countries = {e["context"]["country"] for e in history}
        for event in events:
            assert event["context"]["device_id"] not in usual_devices
            assert event["context"]["country"] not in usual_countries
        logins = of_type(events, "account.login")
        assert logins[-1]["payload"]["success"] is True
        assert all(login["payload"]["success"] is False for login in logins[:-1])
        orders = of_type(events, "order.placed")
        assert orders
        assert all(seconds(o) - seconds(logins[-1]) <= HOUR_S for o in orders)
        usual_amounts = [e["payload"]["amount"] for e in of_type(before, "order.placed")]
        if usual_amounts:
            usual = statistics.median(usual_amounts)
            assert max(o["payload"]["amount"] for o in orders) > 4 * usual
        messages = of_type(events, "message.sent")
        assert all(m["payload"]["has_link"] for m in messages)


def test_fake_listing_ring_signature():
    medians = {category.name: category.median_price for category in CATEGORIES}
    for attack_id, events in instances("fake_listing_ring").items():
        sellers = of_type(events, "account.created")
        assert len(sellers) >= 3
        assert all(s["payload"]["account_kind"] == "seller" for s in sellers)
        subnets = {e["context"]["ip"].rsplit(".", 1)[0] for e in events}
        assert len(subnets) == 1, attack_id
        listings = of_type(events, "listing.created")
        assert len({e["entities"]["shop_id"] for e in listings}) >= 3
        assert len({e["payload"]["category"] for e in listings}) == 1
        for listing in listings:
            typical = medians[listing["payload"]["category"]]
            assert 0.19 * typical <= listing["payload"]["price"] <= 0.41 * typical
        # One title, lightly decorated.
        assert len({undecorated(listing["payload"]["title"]) for listing in listings}) == 1
        created = [seconds(s) for s in sellers]
        assert max(created) - min(created) <= 2 * HOUR_S


def test_review_bombing_signature():
    ordered_by = {
        (e["entities"]["user_id"], e["entities"]["shop_id"])
        for e, _, _ in labelled_events()
        if e["event_type"] == "order.placed"
    }
    for attack_id, events in instances("review_bombing").items():
        reviews = of_type(events, "review.posted")
        assert len(reviews) >= 10
        assert len({r["entities"]["shop_id"] for r in reviews}) == 1
        assert all(r["payload"]["rating"] <= 2 for r in reviews)
        assert sum(r["payload"]["rating"] == 1 for r in reviews) / len(reviews) > 0.6
        reviewers = {r["entities"]["user_id"] for r in reviews}
        created = {e["entities"]["user_id"] for e in of_type(events, "account.created")}
        assert reviewers <= created  # brand-new accounts
        for review in reviews:
            assert (review["entities"]["user_id"], review["entities"]["shop_id"]) not in ordered_by
        assert len({e["context"]["ip"] for e in events}) <= 3
        assert len({e["context"]["device_id"] for e in events}) <= 4
        assert seconds(events[-1]) - seconds(events[0]) <= 5 * HOUR_S, attack_id


def test_no_attacks_when_disabled():
    config = TrafficConfig(events=5_000, seed=21, attack_rate=0.0)
    assert all(r.attack is None for r in generate(config))
    only = TrafficConfig(events=5_000, seed=21, attack_rate=1e-3, attack_types=("card_testing",))
    assert {r.attack for r in generate(only)} == {None, "card_testing"}
