"""Game state as the replay of an append-only log of typed events, and deterministic tools that read it.

The game pushes events (``{"type": "inventory.add", "item": "gold", "qty": 5}``); ``parse_event`` checks them
at the edge and ``EventLog.append`` checks them against the current state, so the log only ever holds events
that applied. ``apply`` is pure and ``replay(log) == the incrementally kept state``. Every fact remembers the
id of the event that last set it, and the tools (``inventory``, ``where_is``, ``can_afford``) return it with
the value, the arithmetic done here, not by the model. Item names match case-insensitively (whitespace
collapsed); the first spelling seen is the one displayed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import ClassVar


class EventError(ValueError):
    """An event that cannot be parsed or applied; ``field`` is its JSON path (e.g. "qty")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EventError(where, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _qty(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError("qty", f"must be a whole number like 5, got {value!r}")
    if value <= 0:
        raise EventError(
            "qty", f"must be at least 1, got {value}; use the other event type to go the other way"
        )
    return value


def norm(item: str) -> str:
    """The lookup key of an item name: case-folded, whitespace collapsed."""
    return " ".join(item.split()).casefold()


@dataclass(frozen=True)
class _Event:
    TYPE: ClassVar[str] = ""
    _: KW_ONLY
    id: int | None = None  # the sequence number in its log, set by EventLog.append
    turn: int | None = None

    def __post_init__(self):
        for key in ("id", "turn"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise EventError(key, f"must be a whole number or null, got {value!r}")

    def _set(self, key: str, value: object) -> None:
        object.__setattr__(self, key, value)  # frozen: only __post_init__ normalises


@dataclass(frozen=True)
class InventoryAdd(_Event):
    TYPE: ClassVar[str] = "inventory.add"
    item: str
    qty: int
    location: str | None = None  # where it is kept; None = carried

    def __post_init__(self):
        super().__post_init__()
        self._set("item", _name(self.item, "item"))
        _qty(self.qty)
        if self.location is not None:
            self._set("location", _name(self.location, "location"))


@dataclass(frozen=True)
class InventoryRemove(_Event):
    TYPE: ClassVar[str] = "inventory.remove"
    item: str
    qty: int

    def __post_init__(self):
        super().__post_init__()
        self._set("item", _name(self.item, "item"))
        _qty(self.qty)


@dataclass(frozen=True)
class SetValue(_Event):
    TYPE: ClassVar[str] = "set"
    key: str
    value: str | int | float | bool

    def __post_init__(self):
        super().__post_init__()
        self._set("key", _name(self.key, "key"))
        if not isinstance(self.value, str | int | float | bool):
            raise EventError("value", f"must be a string, number or boolean, got {type(self.value).__name__}")


@dataclass(frozen=True)
class QuestFlag(_Event):
    TYPE: ClassVar[str] = "quest"
    quest: str
    flag: str
    value: bool = True

    def __post_init__(self):
        super().__post_init__()
        self._set("quest", _name(self.quest, "quest"))
        self._set("flag", _name(self.flag, "flag"))
        if not isinstance(self.value, bool):
            raise EventError("value", f"must be true or false, got {self.value!r}")


@dataclass(frozen=True)
class Happening(_Event):
    TYPE: ClassVar[str] = "happening"
    text: str

    def __post_init__(self):
        super().__post_init__()
        self._set("text", _name(self.text, "text"))


@dataclass(frozen=True)
class MoveItem(_Event):
    TYPE: ClassVar[str] = "move"
    item: str
    location: str  # a phrase that reads after "The key is ...", e.g. "under the mat"

    def __post_init__(self):
        super().__post_init__()
        self._set("item", _name(self.item, "item"))
        self._set("location", _name(self.location, "location"))


Event = InventoryAdd | InventoryRemove | SetValue | QuestFlag | Happening | MoveItem
EVENT_TYPES: dict[str, type[_Event]] = {
    cls.TYPE: cls for cls in (InventoryAdd, InventoryRemove, SetValue, QuestFlag, Happening, MoveItem)
}


def parse_event(obj: dict) -> Event:
    """An event from its JSON object; unknown types and keys, missing fields and bad values raise."""
    if not isinstance(obj, dict):
        raise EventError("$", f"an event must be a JSON object, got {type(obj).__name__}")
    cls = EVENT_TYPES.get(obj.get("type"))
    if cls is None:
        raise EventError(
            "type", f"unknown event type {obj.get('type')!r}; choose one of {sorted(EVENT_TYPES)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in obj:
        if key != "type" and key not in fields:
            raise EventError(key, f"unknown key for {cls.TYPE}; allowed: {sorted(fields)}")
    for name, f in fields.items():
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and name not in obj:
            raise EventError(name, f"missing: a {cls.TYPE} event needs {name!r}")
    return cls(**{k: v for k, v in obj.items() if k != "type"})


def event_to_dict(event: Event) -> dict:
    """The JSON object of an event (``parse_event`` reads it back); fields that are None are left out."""
    out = {"type": event.TYPE}
    for f in dataclasses.fields(event):
        if (value := getattr(event, f.name)) is not None:
            out[f.name] = value
    return out


@dataclass
class GameState:
    inventory: dict[str, int] = field(default_factory=dict)  # display name -> quantity held (> 0)
    locations: dict[str, str] = field(default_factory=dict)  # display name -> where it is
    values: dict[str, str | int | float | bool] = field(default_factory=dict)
    quests: dict[str, dict[str, bool]] = field(default_factory=dict)  # quest -> flag -> value
    happenings: list[str] = field(default_factory=list)
    source: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (kind, key) -> event id
    names: dict[str, str] = field(default_factory=dict)  # norm(item) -> display name

    def display(self, item: str) -> str:
        return self.names.get(norm(item), item.strip())

    def held(self, item: str) -> int:
        return self.inventory.get(self.display(item), 0)

    def location(self, item: str) -> str | None:
        return self.locations.get(self.display(item))


def apply(state: GameState, event: Event) -> GameState:
    """The state after the event (a new object; ``state`` is untouched). Raises EventError if it cannot."""
    new = GameState(
        dict(state.inventory),
        dict(state.locations),
        dict(state.values),
        {q: dict(flags) for q, flags in state.quests.items()},
        list(state.happenings),
        dict(state.source),
        dict(state.names),
    )
    if isinstance(event, InventoryAdd | InventoryRemove | MoveItem):
        key = norm(event.item)
        name = new.names.setdefault(key, event.item)
    if isinstance(event, InventoryAdd):
        new.inventory[name] = new.inventory.get(name, 0) + event.qty
        new.source["inventory", key] = event.id
        if event.location is None:
            new.locations.pop(name, None)  # picked up: carried now
        else:
            new.locations[name] = event.location
        new.source["location", key] = event.id
    elif isinstance(event, InventoryRemove):
        have = new.inventory.get(name, 0)
        if event.qty > have:
            raise EventError("qty", f"cannot remove {event.qty} {name}: only {have} held")
        if have == event.qty:
            del new.inventory[name]
        else:
            new.inventory[name] = have - event.qty
        new.source["inventory", key] = event.id
    elif isinstance(event, MoveItem):
        new.locations[name] = event.location
        new.source["location", key] = event.id
    elif isinstance(event, SetValue):
        new.values[event.key] = event.value
        new.source["value", event.key] = event.id
    elif isinstance(event, QuestFlag):
        new.quests.setdefault(event.quest, {})[event.flag] = event.value
        new.source["quest", f"{event.quest}/{event.flag}"] = event.id
    elif isinstance(event, Happening):
        new.happenings.append(event.text)
        new.source["happening", str(len(new.happenings) - 1)] = event.id
    else:
        raise EventError("type", f"not an event: {type(event).__name__}; build one with parse_event")
    return new


def replay(events: Iterable[Event]) -> GameState:
    state = GameState()
    for event in events:
        state = apply(state, event)
    return state


class EventLog:
    """An in-memory append-only log; an event that does not apply is refused and nothing changes."""

    def __init__(self, events: Iterable[Event] = ()):
        self._events: list[Event] = []
        self._state = GameState()
        for event in events:
            self.append(event, event.turn)

    def append(self, event: Event, turn: int | None = None) -> Event:
        """The event as logged (with its id and turn) after checking it against the current state."""
        turn = event.turn if turn is None else turn
        logged = dataclasses.replace(event, id=len(self._events) + 1, turn=turn)
        self._state = apply(self._state, logged)  # raises before anything is kept
        self._events.append(logged)
        return logged

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def state(self) -> GameState:
        return self._state

    def state_at(self, event_id: int) -> GameState:
        """The state right after event ``event_id`` (0 = before the first event)."""
        if not 0 <= event_id <= len(self._events):
            raise ValueError(
                f"event_id {event_id} is out of range: this log has events 1..{len(self._events)}"
            )
        return replay(self._events[:event_id])


# Deterministic tools: each answers from the state and says which event the answer rests on.


@dataclass(frozen=True)
class Fact:
    subject: str
    attribute: str
    value: object
    source_event: int | None  # the event that last set it; None when nothing recorded it
    text: str  # a short sentence stating it


def inventory(state: GameState, item: str) -> Fact:
    name, n = state.display(item), state.held(item)
    text = f"You have {n} {name}." if n else f"You have no {name}."
    return Fact(name, "quantity", n, state.source.get(("inventory", norm(item))), text)


def where_is(state: GameState, item: str) -> Fact:
    name, place = state.display(item), state.location(item)
    if place is not None:
        return Fact(
            name, "location", place, state.source.get(("location", norm(item))), f"The {name} is {place}."
        )
    if state.held(item):
        source = state.source.get(("inventory", norm(item)))
        return Fact(name, "location", "carried", source, f"You are carrying the {name}.")
    return Fact(name, "location", None, None, f"Nothing records where the {name} is.")


def plural(word: str) -> str:
    return word if word.endswith("s") else word + ("es" if word.endswith(("ch", "sh", "x")) else "s")


def can_afford(
    state: GameState, price_each: int, qty: int, currency: str = "gold", item: str | None = None
) -> Fact:
    """Whether ``qty`` ``item``s at ``price_each`` fit in what is held of ``currency``, with the sums."""
    for key, value, low in (("price_each", price_each, 0), ("qty", qty, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}")
    name, have = state.display(currency), state.held(currency)
    cost = price_each * qty
    value = {"have": have, "cost": cost, "enough": have >= cost, "remaining": have - cost}
    what = f"{qty} {plural(item) if qty != 1 else item}" if item else str(qty)
    sums = f"{what} at {price_each} {name} each cost {cost} {name}; you have {have}"
    text = f"{sums}, so {have - cost} would be left." if have >= cost else f"{sums}, {cost - have} short."
    return Fact(name, "can_afford", value, state.source.get(("inventory", norm(currency))), text)
