"""World info: lorebook entries triggered by keys in the recent messages, fitted into a token budget.

Only the last ``scan_depth`` messages are scanned. An enabled entry triggers when it is constant, or when a
primary key matches and (for a selective entry with secondary keys) its secondary logic holds. A key is a
literal (case-insensitive unless ``case_sensitive``; ``whole_words`` adds word boundaries) or a
``/regex/flags`` (SillyTavern's form; the regex's own flags, e.g. ``i``, apply). With ``recursive``, triggered
entries' content is scanned too, until nothing new triggers.

Budget: constant entries are always included, even when they alone exceed it (``Selection.over_budget``
says so). The other triggered entries are taken in descending ``insertion_order`` (the most important first;
ties in book order) while they fit; one that does not fit is skipped with reason "budget" and smaller ones
after it may still fit. Included blocks are emitted in ascending ``insertion_order``, so the highest-order
entry sits last, nearest the chat, as in SillyTavern. Every entry appears in the report exactly once.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

LOGICS = ("and_any", "not_all", "not_any", "and_all")  # SillyTavern's extensions.selectiveLogic 0..3
POSITIONS = ("before_char", "after_char")
REGEX_KEY = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "g": 0, "u": 0}  # g, u: no-ops here


@lru_cache(maxsize=4096)
def key_pattern(key: str, case_sensitive: bool = False, whole_words: bool = False) -> re.Pattern:
    """The compiled matcher of one key: a ``/regex/flags`` key as written, else an escaped literal."""
    m = REGEX_KEY.match(key)
    if m and set(m.group(2)) <= set(REGEX_FLAGS):
        flags = 0
        for f in m.group(2):
            flags |= REGEX_FLAGS[f]
        try:
            return re.compile(m.group(1), flags)
        except re.error as e:
            raise ValueError(
                f"lorebook key {key!r} is not a valid regex ({e}); fix it or drop the slashes"
            ) from e
    body = re.escape(key)  # whole words: \b, written as lookarounds so "Mr." or "+1" keys still match
    return re.compile(
        rf"(?<!\w){body}(?!\w)" if whole_words else body, 0 if case_sensitive else re.IGNORECASE
    )


@dataclass
class LoreEntry:
    keys: list[str]
    content: str
    secondary_keys: list[str] = field(default_factory=list)
    constant: bool = False
    selective: bool = False
    selective_logic: str = "and_any"  # one of LOGICS
    case_sensitive: bool = False
    whole_words: bool = False
    insertion_order: int = 100
    enabled: bool = True
    name: str = ""
    id: int | str | None = None
    position: str = "before_char"  # one of POSITIONS
    raw: dict = field(default_factory=dict, compare=False)  # the card-book entry, so unknown keys survive

    def __post_init__(self):
        if self.selective_logic not in LOGICS:
            raise ValueError(f"selective_logic {self.selective_logic!r} must be one of {LOGICS}")
        if self.position not in POSITIONS:
            raise ValueError(f"position {self.position!r} must be one of {POSITIONS}")
        for key in self.keys + self.secondary_keys:
            key_pattern(key, self.case_sensitive, self.whole_words)  # a bad regex fails here, not mid-chat

    @property
    def label(self) -> str:
        return self.name or (f"#{self.id}" if self.id is not None else self.content[:30])

    def first_match(self, keys: list[str], text: str) -> str | None:
        for key in keys:
            if key and key_pattern(key, self.case_sensitive, self.whole_words).search(text):
                return key
        return None

    def secondary_holds(self, text: str) -> bool:
        if not self.selective or not self.secondary_keys:
            return True
        hits = [self.first_match([k], text) is not None for k in self.secondary_keys]
        return {
            "and_any": any(hits),
            "not_all": not all(hits),
            "not_any": not any(hits),
            "and_all": all(hits),
        }[self.selective_logic]


@dataclass
class Block:
    name: str
    content: str
    tokens: int
    insertion_order: int
    position: str


@dataclass
class ReportLine:
    name: str
    included: bool
    tokens: int
    reason: str  # "constant", "key:<key>", "budget", "no_key_matched", "secondary_logic" or "disabled"


@dataclass
class Selection:
    included: list[Block]
    report: list[ReportLine]
    tokens: int  # total tokens of the included blocks
    budget: int
    over_budget: bool  # the constant entries alone exceed the budget (they are kept all the same)


@dataclass
class Lorebook:
    entries: list[LoreEntry] = field(default_factory=list)
    scan_depth: int = 4  # how many of the most recent messages are scanned for keys
    token_budget: int = 512
    recursive: bool = False  # scan included entries' content for further keys
    raw: dict = field(default_factory=dict, compare=False)  # the card book, so unknown keys survive

    def __post_init__(self):
        if self.scan_depth < 0:
            raise ValueError(f"scan_depth ({self.scan_depth}) must be >= 0; 0 scans nothing (constants only)")
        if self.token_budget < 0:
            raise ValueError(f"token_budget ({self.token_budget}) must be >= 0")

    def _triggers(self, recent_messages: list[str]) -> dict[int, str]:
        """Reason per entry index: a trigger ("constant", "key:...") or why it did not trigger."""
        window = recent_messages[-self.scan_depth :] if self.scan_depth else []
        text, reasons = "\n".join(window), {}
        while True:
            new = []
            for i, e in enumerate(self.entries):
                if reasons.get(i) in (None, "no_key_matched", "secondary_logic"):  # may trigger now
                    reasons[i] = self._reason(e, text)
                    if reasons[i] == "constant" or reasons[i].startswith("key:"):
                        new.append(e.content)
            if not (self.recursive and new):
                return reasons
            text += "\n" + "\n".join(new)

    @staticmethod
    def _reason(e: LoreEntry, text: str) -> str:
        if not e.enabled:
            return "disabled"
        if e.constant:
            return "constant"
        if (key := e.first_match(e.keys, text)) is None:
            return "no_key_matched"
        return f"key:{key}" if e.secondary_holds(text) else "secondary_logic"

    def select(
        self, recent_messages: list[str], count_tokens: Callable[[str], int], budget: int | None = None
    ) -> Selection:
        budget = self.token_budget if budget is None else budget
        reasons = self._triggers(recent_messages)
        tokens = {i: count_tokens(e.content) for i, e in enumerate(self.entries) if reasons[i] != "disabled"}
        taken = [i for i in reasons if reasons[i] == "constant"]
        used = sum(tokens[i] for i in taken)
        over_budget = used > budget
        keyed = [i for i in reasons if reasons[i].startswith("key:")]
        for i in sorted(keyed, key=lambda i: -self.entries[i].insertion_order):
            if used + tokens[i] <= budget:
                taken.append(i)
                used += tokens[i]
            else:
                reasons[i] = "budget"
        chosen = set(taken)
        order = sorted(chosen, key=lambda i: (self.entries[i].insertion_order, i))
        included = [
            Block(e.label, e.content, tokens[i], e.insertion_order, e.position)
            for i in order
            for e in [self.entries[i]]
        ]
        report = [
            ReportLine(e.label, i in chosen, tokens.get(i, 0), reasons[i]) for i, e in enumerate(self.entries)
        ]
        return Selection(included, report, used, budget, over_budget)


# The card book (character_book in a V2/V3 card) <-> Lorebook. Unknown keys are kept through ``raw``.


def lorebook_from_card_book(book: dict) -> Lorebook:
    entries = []
    for n, item in enumerate(book.get("entries", [])):
        if not isinstance(item, dict) or not isinstance(item.get("keys", []), list):
            raise ValueError(f"character_book.entries[{n}] must be an object with a 'keys' list")
        ext = item.get("extensions") or {}
        logic = ext.get("selectiveLogic", 0)
        if logic not in range(len(LOGICS)):
            raise ValueError(
                f"character_book.entries[{n}].extensions.selectiveLogic ({logic!r}) must be 0..3"
            )
        entries.append(
            LoreEntry(
                keys=list(item.get("keys", [])),
                content=item.get("content", ""),
                secondary_keys=list(item.get("secondary_keys") or []),
                constant=bool(item.get("constant")),
                selective=bool(item.get("selective")),
                selective_logic=LOGICS[logic],
                case_sensitive=bool(item.get("case_sensitive")),
                whole_words=bool(ext.get("match_whole_words")),
                insertion_order=int(item.get("insertion_order", 100)),
                enabled=bool(item.get("enabled", True)),
                name=item.get("name") or item.get("comment") or "",
                id=item.get("id"),
                position=item.get("position") or "before_char",
                raw=copy.deepcopy(item),
            )
        )
    return Lorebook(
        entries,
        scan_depth=4 if book.get("scan_depth") is None else int(book["scan_depth"]),
        token_budget=512 if book.get("token_budget") is None else int(book["token_budget"]),
        recursive=bool(book.get("recursive_scanning")),
        raw=copy.deepcopy(book),
    )


def _put(out: dict, key: str, value, default) -> None:
    """Write a field unless the original already says the same (None read as the default) or it is absent
    and the value is the default, so an untouched book round trips exactly."""
    if key in out:
        current = default if out[key] is None else out[key]
        if (bool(current) if isinstance(value, bool) else current) == value:
            return
    elif value == default:
        return
    out[key] = value


def lorebook_to_card_book(book: Lorebook) -> dict:
    out = copy.deepcopy(book.raw)
    _put(out, "scan_depth", book.scan_depth, 4)
    _put(out, "token_budget", book.token_budget, 512)
    _put(out, "recursive_scanning", book.recursive, False)
    out.setdefault("extensions", {})
    out["entries"] = []
    for e in book.entries:
        item = copy.deepcopy(e.raw)
        item |= {"keys": list(e.keys), "content": e.content, "enabled": e.enabled}
        item |= {"insertion_order": e.insertion_order}
        ext = item.setdefault("extensions", {})
        _put(ext, "selectiveLogic", LOGICS.index(e.selective_logic), 0)
        _put(ext, "match_whole_words", e.whole_words, False)
        _put(item, "secondary_keys", list(e.secondary_keys), [])
        _put(item, "constant", e.constant, False)
        _put(item, "selective", e.selective, False)
        _put(item, "case_sensitive", e.case_sensitive, False)
        _put(item, "position", e.position, "before_char")
        if e.id is not None:
            item["id"] = e.id
        if e.name and item.get("comment") != e.name:
            item["name"] = e.name
        out["entries"].append(item)
    return out
