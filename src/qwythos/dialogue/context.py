"""One turn's prompt, inside one token budget, with a report of every block included or skipped and why.

Layout (the chat template's messages, in order):

    system   the card (system prompt, description, personality, scenario, example lines) + constant lore
             -- the stable prefix: identical every turn, so its KV cache is reused (voice.PrefixCache)
    system   memory: recap, recalled old turns, ledger facts for what the player names, triggered lore
    ...      the latest messages of the conversation that fit
    user     the player's message
    system   the post-history note and the verified facts of this turn (stated exactly)

The card, the constant lore, the player's message, the note and the verified facts are always in (a card
larger than the budget is reported ``over_budget``). The rest is filled greedily in priority order: ledger
facts, the last exchange, triggered lore, the recap, recalled turns, then older messages newest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from .cards import Card, expand_macros
from .lorebook import Lorebook
from .memory import Recalled

MESSAGE_OVERHEAD = 5  # chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n)


@dataclass
class ReportItem:
    block: str  # card | constant_lore | lore | ledger | recap | recalled | history | player | note | facts
    name: str
    tokens: int
    included: bool
    reason: str


@dataclass
class Context:
    prefix: list[dict]  # the stable messages (the reused prefix)
    messages: list[dict]  # every message, prefix first
    report: list[ReportItem]
    tokens: int  # estimated prompt tokens of the included blocks
    budget: int
    over_budget: bool
    window: list[int] = field(default_factory=list)  # seqs of the history messages included

    def report_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.report]


def card_text(card: Card, user: str) -> str:
    parts = [
        card.system_prompt or f"You are {card.name}. Stay in character and speak as {card.name}.",
        card.description,
        f"Personality: {card.personality}" if card.personality else "",
        f"Scenario: {card.scenario}" if card.scenario else "",
        f"How {card.name} speaks:\n{card.mes_example}" if card.mes_example else "",
    ]
    return expand_macros("\n\n".join(p for p in parts if p), card.name, user)


def build(
    card: Card,
    lorebook: Lorebook | None,
    history: list[dict],  # {seq, role, content}, oldest first
    player_message: str,
    user: str,
    count_tokens: Callable[[str], int],
    budget: int,
    facts: list[str] = (),  # verified facts of this turn, stated exactly
    ledger: list[dict] = (),  # current ledger rows {subject, attribute, value}
    recap: str = "",
    recalled: list[Recalled] = (),
    reminder: str = "",  # the voice lock's re-injected example lines (empty: the voice has not drifted)
) -> Context:
    report: list[ReportItem] = []

    def cost(text: str) -> int:
        return count_tokens(text) + MESSAGE_OVERHEAD

    stable = card_text(card, user)
    report.append(ReportItem("card", card.name, cost(stable), True, "always"))
    constant, scanned = [], None
    if lorebook is not None:
        scanned = lorebook.select([m["content"] for m in history] + [player_message], count_tokens)
        for line in scanned.report:
            if line.reason == "constant":
                constant.append(next(b.content for b in scanned.included if b.name == line.name))
                report.append(ReportItem("constant_lore", line.name, line.tokens, True, "constant"))
    if constant:
        stable += "\n\nWorld:\n" + "\n".join(expand_macros(c, card.name, user) for c in constant)
    prefix = [{"role": "system", "content": stable}]

    post = card.post_history_instructions
    note_parts = []
    if post:
        note_parts.append(expand_macros(post, card.name, user))
        report.append(
            ReportItem("note", "post_history_instructions", count_tokens(note_parts[0]), True, "always")
        )
    if reminder:
        note_parts.append(reminder)
        report.append(ReportItem("note", "voice_lock", count_tokens(reminder), True, "the voice drifted"))
    if facts:
        note_parts.append("Verified facts (state them exactly): " + " ".join(facts))
        report += [ReportItem("facts", f, count_tokens(f), True, "verified") for f in facts]
    note = "\n".join(note_parts)
    report.append(ReportItem("player", "message", cost(player_message), True, "always"))
    used = cost(stable) + cost(player_message) + (cost(note) if note else 0)
    over = used > budget

    def take(block: str, name: str, text: str, reason: str, extra: int = 0) -> bool:
        nonlocal used
        n = count_tokens(text) + extra
        ok = used + n <= budget
        used += n if ok else 0
        report.append(ReportItem(block, name, n, ok, reason if ok else "budget"))
        return ok

    memory: list[str] = []
    named = player_message.lower()
    for row in ledger:
        words = f"{row['subject']} {row['attribute']}".lower().split()
        hit = (row["subject"], row["attribute"]) == ("player", "name") or any(w in named for w in words)
        line = f"{row['subject']} {row['attribute']}: {row['value']}"
        if not hit:
            report.append(ReportItem("ledger", line, count_tokens(line), False, "not_named"))
        elif take("ledger", line, line, "named"):
            memory.append(f"- {line}")

    window: list[int] = []
    rest = list(history)
    last_pair = rest[-2:]
    for m in reversed(last_pair):
        if take("history", f"#{m['seq']} {m['role']}", m["content"], "recent", MESSAGE_OVERHEAD):
            window.insert(0, m["seq"])
    rest = rest[: len(rest) - len(last_pair)]

    lore: list[str] = []
    if scanned is not None:
        for line in scanned.report:
            if line.reason == "constant":
                continue
            if not line.reason.startswith("key:"):
                report.append(ReportItem("lore", line.name, line.tokens, False, line.reason))
                continue
            content = next((b.content for b in scanned.included if b.name == line.name), None)
            if content is None:  # the lorebook's own budget skipped it
                report.append(ReportItem("lore", line.name, line.tokens, False, "lore_budget"))
            elif take("lore", line.name, content, line.reason):
                lore.append(expand_macros(content, card.name, user))

    if recap and take("recap", "recap", recap, "older turns"):
        memory.insert(0, "Earlier:\n" + recap)
    for r in recalled:
        text = f"(turn {r.seq}) {r.role}: {r.content}"
        if take("recalled", f"#{r.seq}", text, f"relevance {r.score:.2f}"):
            memory.append(text)

    for k, m in enumerate(reversed(rest)):
        if not take("history", f"#{m['seq']} {m['role']}", m["content"], "recent", MESSAGE_OVERHEAD):
            if len(rest) - k - 1:
                older = f"{len(rest) - k - 1} older messages"
                report.append(ReportItem("history", older, 0, False, "budget (recap and recall cover them)"))
            break
        window.insert(0, m["seq"])

    messages = list(prefix)
    if memory or lore:
        volatile = "\n".join(memory + (["World:"] + lore if lore else []))
        messages.append({"role": "system", "content": volatile})
        used += MESSAGE_OVERHEAD
    messages += [{"role": m["role"], "content": m["content"]} for m in history if m["seq"] in set(window)]
    messages.append({"role": "user", "content": player_message})
    if note:
        messages.append({"role": "system", "content": note})
    return Context(prefix, messages, report, used, budget, over, window)
