"""Game state: event parsing errors, pure apply, replay == incremental state, the tools' arithmetic."""

from __future__ import annotations

import random

import pytest

from qwythos.dialogue.state import (
    EventError,
    EventLog,
    GameState,
    Happening,
    InventoryAdd,
    InventoryRemove,
    MoveItem,
    QuestFlag,
    SetValue,
    apply,
    can_afford,
    event_to_dict,
    inventory,
    parse_event,
    replay,
    where_is,
)


def test_parse_each_type_and_back():
    objs = [
        {"type": "inventory.add", "item": "gold", "qty": 5},
        {"type": "inventory.add", "item": "key", "qty": 1, "location": "in the chest"},
        {"type": "inventory.remove", "item": "gold", "qty": 2},
        {"type": "set", "key": "weather", "value": "rain"},
        {"type": "quest", "quest": "lighthouse", "flag": "started", "value": False},
        {"type": "happening", "text": "The bell rang."},
        {"type": "move", "item": "key", "location": "under the mat"},
    ]
    events = [parse_event(o) for o in objs]
    assert [type(e) for e in events] == [
        InventoryAdd,
        InventoryAdd,
        InventoryRemove,
        SetValue,
        QuestFlag,
        Happening,
        MoveItem,
    ]
    assert [event_to_dict(e) for e in events] == objs
    assert parse_event({"type": "quest", "quest": "q", "flag": "done"}).value is True


@pytest.mark.parametrize(
    "obj, field, message",
    [
        ({"type": "steal", "item": "x"}, "type", "inventory.add"),
        ({"item": "x"}, "type", "choose one of"),
        ({"type": "inventory.add", "item": "gold"}, "qty", "missing"),
        ({"type": "inventory.add", "item": "gold", "qty": 0}, "qty", "at least 1"),
        ({"type": "inventory.add", "item": "gold", "qty": -3}, "qty", "at least 1"),
        ({"type": "inventory.add", "item": "gold", "qty": 2.5}, "qty", "whole number"),
        ({"type": "inventory.add", "item": "gold", "qty": True}, "qty", "whole number"),
        ({"type": "inventory.remove", "item": "  ", "qty": 1}, "item", "non-empty"),
        ({"type": "inventory.add", "item": "gold", "qty": 1, "colour": "red"}, "colour", "unknown key"),
        ({"type": "set", "key": "k", "value": [1]}, "value", "string, number or boolean"),
        ({"type": "quest", "quest": "q", "flag": "f", "value": "yes"}, "value", "true or false"),
        ({"type": "happening", "text": "x", "turn": "3"}, "turn", "whole number"),
    ],
)
def test_parse_errors_name_the_field(obj, field, message):
    with pytest.raises(EventError, match=message) as info:
        parse_event(obj)
    assert info.value.field == field


def test_apply_is_pure_and_names_normalise():
    s0 = GameState()
    s1 = apply(s0, InventoryAdd("Gold Coins", 3, id=1))
    s2 = apply(s1, InventoryAdd("  gold   coins ", 4, id=2))
    assert s0 == GameState() and s1.inventory == {"Gold Coins": 3}
    assert (
        s2.inventory == {"Gold Coins": 7}
        and s2.held("GOLD COINS") == 7
        and s2.source["inventory", "gold coins"] == 2
    )


def test_over_removal_refused_state_unchanged():
    log = EventLog()
    log.append(InventoryAdd("gold", 3))
    before = log.state
    with pytest.raises(EventError, match="cannot remove 5 gold: only 3 held") as info:
        log.append(InventoryRemove("Gold", 5))
    assert info.value.field == "qty" and log.state == before and len(log.events) == 1
    with pytest.raises(EventError, match="only 0 held"):
        log.append(InventoryRemove("lamp", 1))
    assert len(log.events) == 1


def random_event(rng: random.Random, state: GameState):
    items = ["gold", "Lamp", "key", "rope", "map"]
    kind = rng.choice(["add", "add", "remove", "set", "quest", "happening", "move"])
    if kind == "remove" and state.inventory:
        name = rng.choice(sorted(state.inventory))
        return InventoryRemove(
            name.upper() if rng.random() < 0.3 else name, rng.randint(1, state.inventory[name])
        )
    if kind == "set":
        return SetValue(rng.choice(["weather", "hour", "mood"]), rng.choice(["rain", 3, 2.5, True]))
    if kind == "quest":
        return QuestFlag(rng.choice(["bell", "ship"]), rng.choice(["started", "done"]), rng.random() < 0.5)
    if kind == "happening":
        return Happening(f"event {rng.random():.3f}")
    if kind == "move":
        return MoveItem(rng.choice(items), rng.choice(["under the mat", "in the chest"]))
    return InventoryAdd(rng.choice(items), rng.randint(1, 9), rng.choice([None, "on the shelf"]))


def test_replay_equals_incremental_state_and_invalid_events_change_nothing():
    rng, log = random.Random(1234), EventLog()
    for turn in range(200):
        log.append(random_event(rng, log.state), turn=turn)
        if rng.random() < 0.2:  # an impossible removal: refused, nothing changes
            before, n = log.state, len(log.events)
            with pytest.raises(EventError):
                log.append(InventoryRemove("rope", log.state.held("rope") + 1))
            assert log.state == before and len(log.events) == n
    events = log.events
    assert [e.id for e in events] == list(range(1, 201)) and events[10].turn == 10
    assert replay(events) == log.state
    assert replay(parse_event(event_to_dict(e)) for e in events) == log.state
    assert EventLog(events).state == log.state
    assert log.state_at(50) == replay(events[:50]) and log.state_at(0) == GameState()
    assert all(q > 0 for q in log.state.inventory.values())
    with pytest.raises(ValueError, match="out of range"):
        log.state_at(201)


def test_tools_answer_with_source_events():
    log = EventLog()
    log.append(InventoryAdd("gold", 20))
    log.append(InventoryRemove("gold", 8))
    log.append(MoveItem("key", "under the mat"))
    log.append(InventoryAdd("rope", 1))
    s = log.state
    assert inventory(s, "Gold") == inventory(s, "gold")
    f = inventory(s, "gold")
    assert (f.value, f.source_event, f.text) == (12, 2, "You have 12 gold.")
    assert inventory(s, "lamp").text == "You have no lamp." and inventory(s, "lamp").source_event is None
    w = where_is(s, "KEY")
    assert (w.value, w.source_event, w.text) == ("under the mat", 3, "The key is under the mat.")
    assert where_is(s, "rope").value == "carried" and where_is(s, "rope").source_event == 4
    assert where_is(s, "chart").value is None
    log.append(InventoryAdd("key", 1))  # picked up
    assert where_is(log.state, "key").value == "carried"


def test_can_afford_arithmetic():
    s = replay([InventoryAdd("gold", 12, id=1)])
    two = can_afford(s, 7, 2)
    assert two.value == {"have": 12, "cost": 14, "enough": False, "remaining": -2} and two.source_event == 1
    assert two.text == "2 at 7 gold each cost 14 gold; you have 12, 2 short."
    one = can_afford(s, 7, 1)
    assert one.value["enough"] and one.value["remaining"] == 5 and "5 would be left" in one.text
    assert can_afford(s, 1, 1, currency="silver").value["have"] == 0
    with pytest.raises(ValueError, match="qty"):
        can_afford(s, 7, 0)
    with pytest.raises(ValueError, match="price_each"):
        can_afford(s, True, 1)
