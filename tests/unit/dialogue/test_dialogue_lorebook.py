"""Lorebook selection: every reason, scan depth, matching options, secondary logic, the budget."""

from __future__ import annotations

import pytest

from qwythos.dialogue.cards import card_to_dict, parse_card
from qwythos.dialogue.lorebook import Lorebook, LoreEntry, lorebook_from_card_book, lorebook_to_card_book


def words(text: str) -> int:
    return len(text.split())


def reasons(book: Lorebook, messages: list[str], budget: int | None = None) -> dict[str, tuple[bool, str]]:
    sel = book.select(messages, words, budget)
    assert len(sel.report) == len(book.entries)  # every entry exactly once
    return {line.name: (line.included, line.reason) for line in sel.report}


def test_each_reason_and_report_covers_every_entry():
    book = Lorebook(
        [
            LoreEntry([], "The harbour never sleeps.", constant=True, name="world"),
            LoreEntry(["lamp"], "Lamps cost seven gold.", name="lamp"),
            LoreEntry(["dragon"], "There are no dragons.", name="dragon"),
            LoreEntry(["lamp"], "Off.", enabled=False, name="off"),
            LoreEntry(["lamp"], "Oil.", selective=True, secondary_keys=["oil"], name="oil"),
            LoreEntry(["Lamp"], "one two three four five six", insertion_order=1, name="long"),
        ]
    )
    got = reasons(book, ["Can I buy a LAMP?"], budget=8)
    assert got == {
        "world": (True, "constant"),
        "lamp": (True, "key:lamp"),
        "dragon": (False, "no_key_matched"),
        "off": (False, "disabled"),
        "oil": (False, "secondary_logic"),
        "long": (False, "budget"),
    }
    sel = book.select(["Can I buy a LAMP?"], words, budget=8)
    assert [b.name for b in sel.included] == ["world", "lamp"] and sel.tokens == 8 and not sel.over_budget


def test_scan_depth_only_reads_recent_messages():
    book = Lorebook([LoreEntry(["key"], "k", name="k")], scan_depth=2)
    assert reasons(book, ["the key", "a", "b"])["k"] == (False, "no_key_matched")
    assert reasons(book, ["a", "the key", "b"])["k"] == (True, "key:key")
    assert reasons(Lorebook(book.entries, scan_depth=0), ["key"])["k"][1] == "no_key_matched"


def test_case_sensitivity_and_whole_words():
    cs = LoreEntry(["Mara"], "x", case_sensitive=True, name="cs")
    ww = LoreEntry(["cat"], "y", whole_words=True, name="ww")
    sub = LoreEntry(["cat"], "z", name="sub")
    book = Lorebook([cs, ww, sub])
    assert reasons(book, ["mara saw a category"]) == {
        "cs": (False, "no_key_matched"),
        "ww": (False, "no_key_matched"),
        "sub": (True, "key:cat"),
    }
    assert reasons(book, ["Mara saw a Cat."])["ww"] == (True, "key:cat")
    assert reasons(book, ["Mara saw"])["cs"] == (True, "key:Mara")
    mr = Lorebook([LoreEntry(["Mr."], "m", whole_words=True, name="mr")])
    assert reasons(mr, ["ask Mr. Oak"])["mr"][0] and not reasons(mr, ["Mr.X"])["mr"][0]


def test_regex_keys_use_their_own_flags():
    book = Lorebook(
        [LoreEntry(["/gold (coin|bar)s?/i"], "g", name="i"), LoreEntry(["/^Gold$/"], "h", name="c")]
    )
    assert reasons(book, ["Two GOLD BARS"]) == {
        "i": (True, "key:/gold (coin|bar)s?/i"),
        "c": (False, "no_key_matched"),
    }
    assert reasons(book, ["Gold"])["c"] == (True, "key:/^Gold$/")
    with pytest.raises(ValueError, match="not a valid regex"):
        LoreEntry(["/(unclosed/"], "x")


@pytest.mark.parametrize(
    "logic, expected",  # secondary keys ["oil", "wick"]; messages mention: none, one, both
    [
        ("and_any", [False, True, True]),
        ("not_all", [True, True, False]),
        ("not_any", [True, False, False]),
        ("and_all", [False, False, True]),
    ],
)
def test_secondary_logic(logic, expected):
    e = LoreEntry(
        ["lamp"], "x", selective=True, secondary_keys=["oil", "wick"], selective_logic=logic, name="e"
    )
    book = Lorebook([e])
    got = [reasons(book, [m])["e"] for m in ("a lamp", "a lamp and oil", "a lamp, oil and a wick")]
    assert [inc for inc, _ in got] == expected
    assert all(r == ("key:lamp" if inc else "secondary_logic") for inc, r in got)


def test_constant_entries_are_never_dropped():
    book = Lorebook([LoreEntry([], "a b c d e", constant=True, name="c1"), LoreEntry(["x"], "y", name="k")])
    sel = book.select(["x"], words, budget=3)
    assert [b.name for b in sel.included] == ["c1"] and sel.over_budget and sel.tokens == 5
    assert reasons(book, ["x"], budget=3)["k"] == (False, "budget")


def test_priority_by_descending_order_emitted_ascending():
    book = Lorebook(
        [
            LoreEntry(["a"], "one two", insertion_order=5, name="low"),
            LoreEntry(["a"], "one two", insertion_order=50, name="high"),
            LoreEntry(["a"], "one two three", insertion_order=20, name="mid"),
            LoreEntry(["a"], "one", insertion_order=1, name="tiny"),
        ]
    )
    sel = book.select(["a"], words, budget=6)
    assert [b.name for b in sel.included] == ["tiny", "mid", "high"]  # low skipped, tiny still fits
    assert {r.name: r.reason for r in sel.report}["low"] == "budget"


def test_recursive_scanning():
    entries = [
        LoreEntry(["ship"], "The ship carries a lantern.", name="ship"),
        LoreEntry(["lantern"], "L", name="l"),
    ]
    assert reasons(Lorebook(entries), ["a ship"])["l"] == (False, "no_key_matched")
    assert reasons(Lorebook(entries, recursive=True), ["a ship"])["l"] == (True, "key:lantern")


def test_card_book_round_trip_and_extensions():
    book = {
        "name": "Harbour",
        "scan_depth": 3,
        "token_budget": 100,
        "recursive_scanning": False,
        "extensions": {"st": 1},
        "entries": [
            {
                "keys": ["lamp"],
                "content": "Lamps.",
                "extensions": {"selectiveLogic": 3, "match_whole_words": True, "depth": 4},
                "enabled": True,
                "insertion_order": 10,
                "case_sensitive": None,
                "selective": True,
                "secondary_keys": ["oil", "wick"],
                "comment": "lamps",
                "id": 7,
                "position": "after_char",
            },
            {"keys": ["x"], "content": "X", "extensions": {}, "enabled": False, "insertion_order": 0},
        ],
    }
    lb = lorebook_from_card_book(book)
    e = lb.entries[0]
    assert (lb.scan_depth, lb.token_budget, e.selective_logic, e.whole_words, e.name) == (
        3,
        100,
        "and_all",
        True,
        "lamps",
    )
    assert e.position == "after_char" and not lb.entries[1].enabled
    assert lorebook_to_card_book(lb) == book
    e.selective_logic, e.constant = "not_any", True
    out = lorebook_to_card_book(lb)["entries"][0]
    assert (
        out["extensions"]["selectiveLogic"] == 2
        and out["constant"] is True
        and out["extensions"]["depth"] == 4
    )


def test_card_book_zero_depth_and_budget_are_kept():
    lb = lorebook_from_card_book({"scan_depth": 0, "token_budget": 0, "entries": []})
    assert (lb.scan_depth, lb.token_budget) == (0, 0)


def test_card_book_errors():
    with pytest.raises(ValueError, match=r"entries\[0\].extensions.selectiveLogic"):
        lorebook_from_card_book(
            {"entries": [{"keys": [], "content": "", "extensions": {"selectiveLogic": 9}}]}
        )
    with pytest.raises(ValueError, match="scan_depth"):
        Lorebook([], scan_depth=-1)


def test_a_cards_book_selects_and_goes_back_into_the_card():
    book = {
        "extensions": {},
        "entries": [
            {
                "keys": ["lamp"],
                "content": "Lamps cost 7 gold.",
                "extensions": {},
                "enabled": True,
                "insertion_order": 1,
            }
        ],
    }
    card_dict = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {"name": "Mara", "character_book": book},
    }
    card = parse_card(card_dict)
    lb = lorebook_from_card_book(card.character_book)
    assert [b.content for b in lb.select(["Two lamps, please."], words).included] == ["Lamps cost 7 gold."]
    card.character_book = lorebook_to_card_book(lb)
    assert card_to_dict(card) == card_dict
