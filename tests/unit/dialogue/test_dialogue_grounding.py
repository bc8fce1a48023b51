"""Grounding and the claim checker on a hand-made state: what a player's question asks, the verified facts
(with the events they rest on), and which claims of a reply contradict the state or the card."""

from __future__ import annotations

from qwythos.dialogue.grounding import Query, ask_ledger, check_claims, detect, ground
from qwythos.dialogue.state import EventLog, parse_event


def world():
    log = EventLog()
    for e in (
        {"type": "inventory.add", "item": "gold", "qty": 12},
        {"type": "inventory.add", "item": "lamp", "qty": 1},
        {"type": "inventory.add", "item": "rusty key", "qty": 1, "location": "under the doormat"},
        {"type": "set", "key": "price.lamp", "value": 7},
        {"type": "inventory.remove", "item": "gold", "qty": 2},
    ):
        log.append(parse_event(e))
    return log.state


def test_questions_become_tool_queries():
    s = world()
    assert detect("How much gold do I have?", s) == [Query("inventory", "gold")]
    assert detect("Where did I put the rusty key?", s) == [Query("where_is", "rusty key")]
    assert detect("Can I afford two lamps?", s) == [Query("can_afford", "lamp", 2, 7)]
    assert detect("Can I afford a lamp?", s) == [Query("can_afford", "lamp", 1, 7)]
    assert detect("Tell me about the northern road.", s) == []  # no state touched
    assert detect("how many lamps are left", s) == [Query("inventory", "lamp")]


def test_items_the_log_never_named_are_answered_as_nothing_recorded():
    s = world()
    (q,) = detect("How many swords do I have?", s)
    assert q == Query("inventory", "swords") and ground([q], s)[0].text == "You have no swords."
    (q,) = detect("Where did I leave my silver ring?", s)
    assert ground([q], s)[0].text == "Nothing records where the silver ring is."
    assert detect("Where is the road going?", s) == [
        Query("where_is", "road going")
    ]  # asked: nothing recorded


def test_the_players_own_statements_come_back_from_the_ledger():
    ledger = [
        {"subject": "player", "attribute": "sister", "value": "Marta"},
        {"subject": "player", "attribute": "favourite colour", "value": "red"},
    ]
    ((q, f),) = ask_ledger("What is my sister called?", ledger)
    assert q == Query("player_fact", "sister") and f.text == "Your sister is called Marta."
    ((_, f),) = ask_ledger("what's my favorite colour?", ledger)
    assert f.text == "Your favourite colour is red."
    assert ask_ledger("What is my horse called?", ledger) == [] and ask_ledger("Hello", ledger) == []


def test_facts_carry_the_event_they_rest_on():
    s = world()
    gold, key, afford = ground(
        [Query("inventory", "gold"), Query("where_is", "rusty key"), Query("can_afford", "lamp", 2, 7)], s
    )
    assert (gold.value, gold.source_event, gold.text) == (10, 5, "You have 10 gold.")
    assert key.value == "under the doormat" and key.source_event == 3
    assert afford.value == {"have": 10, "cost": 14, "enough": False, "remaining": -4}
    assert afford.text == "2 lamps at 7 gold each cost 14 gold; you have 10, 4 short."


def test_claims_that_contradict_the_state_or_the_card():
    s = world()
    assert check_claims("You have 10 gold, traveller.", s, "Mira") == []
    (c,) = check_claims("Ah, you have 12 gold coins left!", s, "Mira")
    assert (c.kind, c.subject, c.said, c.truth, c.source_event) == ("quantity", "gold", "12", "10", 5)
    (c,) = check_claims("The rusty key is in the well.", s)
    assert c.kind == "location" and c.truth == "under the doormat"
    assert check_claims("The rusty key is under the old doormat.", s) == []
    (c,) = check_claims("My name is Bob, the smith.", s, "Mira Vance")
    assert c.kind == "persona" and c.said == "Bob"
    assert check_claims("My name is Mira.", s, "Mira Vance") == []
    assert check_claims("You have two lamps? No, you have one lamp.", s)[0].said == "2"


def test_claims_about_items_the_log_never_named_are_checked_when_asked():
    """The abstain probes: after "You have no swords" / "Nothing records where the silver ring is" a reply
    that invents a count or a place is a contradiction (and so gets its one repair)."""
    s = world()
    assert check_claims("You have 3 swords, friend.", s) == []  # not asked: unknown items stay unchecked
    (c,) = check_claims("You have 3 swords, friend.", s, asked=["swords"])
    assert (c.kind, c.said, c.truth) == ("quantity", "3", "0")
    assert check_claims("You have no swords at all.", s, asked=["swords"]) == []
    (c,) = check_claims("Your silver ring is in the chest by the door.", s, asked=["silver ring"])
    assert (c.kind, c.subject, c.truth) == ("location", "silver ring", "not recorded")
    (c,) = check_claims("Oh, it's under the bed.", s, asked=["silver ring"])
    assert c.said == "under the bed"
    assert check_claims("Nobody knows where that ring went.", s, asked=["silver ring"]) == []
    # a known, carried item has no recorded place and is not contradicted by one
    assert check_claims("It is in your pack.", s, asked=["gold"]) == []
