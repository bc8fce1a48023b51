"""One turn of the dialogue engine, end to end, on a store and a model:

    ingest   the session, its card and lorebook, the event log replayed into the state, the history
    ground   the state questions the player asks, answered by the state's tools into verified facts
    select   card, note, lore, ledger, recap, recalled turns and history inside one budget (context.py)
    voice    a narrative gear bias, the verified values pinned with the gate on reasoning (voice.py)
    check    the claim checker; a contradiction triggers at most one regeneration with the facts re-pinned
    remember player and NPC messages, the ledger, the recap every N turns: one transaction (unless a probe)
    respond  the reply plus ``x_qwythos``: context report, grounding, consistency, gear

Sessions are serialised: a second turn on a busy session raises ``Busy`` (the API answers 409).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from ..inference.engine import Engine, parse_routing
from ..inference.sampling import GearSampling, SamplingParams, for_model, parse_gear_sampling
from ..inference.trace import token_texts
from . import context as ctx
from .cards import Card
from .grounding import Contradiction, ask_ledger, check_claims, detect, ground
from .lorebook import Lorebook, lorebook_from_card_book
from .memory import fit_lines, player_facts, recall, recap_lines
from .state import EventLog, GameState, inventory, parse_event, where_is
from .store import Store
from .style import example_lines, similarity
from .voice import Free, Pinned, Voice

SENTENCE_END = [". ", "! ", "? ", "\n"]


class NotFound(LookupError):
    """A session or character that does not exist, or belongs to another API key."""


class Busy(RuntimeError):
    """A turn is already running on this session."""


@dataclass
class Settings:
    """A session's settings (``settings`` of a new session; every key optional)."""

    budget: int = 1024  # prompt tokens of a turn, everything included
    reply_tokens: int = 80  # the NPC's free reply
    lead_tokens: int = 24  # a voiced lead-in before pinned facts (0 = facts first)
    window: int = 8  # latest messages offered to the prompt; older ones reach it by recap and recall
    recap_every: int = 6  # messages between recaps
    recap_tokens: int = 160
    recall: int = 2  # old turns recalled per turn
    narrative_bias: float = 1.0  # router offset toward narrative for the voice (reasoning gets minus it)
    gear_bias: dict[str, float] = field(default_factory=dict)  # more router offset per pathway, on top
    routing: str | None = None  # soft | top1 | force=<pathway> for the voice (None: the model's default)
    gear_sampling: str = "reasoning:t=0;narrative:t=0.8,top_p=0.95"
    repetition_penalty: float = 1.1
    seed: int | None = 0  # None: a fresh seed each turn
    repair: bool = True  # one regeneration when a claim contradicts the state
    grounding: bool = True  # answer state questions with the tools (off: the model alone)
    ledger: bool = True  # the fact ledger in the prompt (off with grounding off: the lorebook + recap recipe)
    voice_lock: bool = True  # after a reply that drifted from the card's example lines: more narrative bias
    voice_floor: float = 0.2  # "drifted": style similarity (dialogue/style.py) below this
    voice_boost: float = 1.0  # the extra narrative bias of the locked turn (with the lines re-injected)

    def __post_init__(self) -> None:
        for name in ("budget", "reply_tokens", "window", "recap_every", "recap_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"settings.{name} ({getattr(self, name)}) must be >= 1")
        for name in ("lead_tokens", "recall"):
            if getattr(self, name) < 0:
                raise ValueError(f"settings.{name} ({getattr(self, name)}) must be >= 0")
        if not 0 <= self.voice_floor <= 1:
            raise ValueError(f"settings.voice_floor ({self.voice_floor}) must be in [0, 1]")
        if not 0 <= self.voice_boost <= 20:
            raise ValueError(f"settings.voice_boost ({self.voice_boost}) must be in [0, 20]")
        if not -20 <= self.narrative_bias <= 20:
            raise ValueError(f"settings.narrative_bias ({self.narrative_bias}) must be in [-20, 20]")
        if not isinstance(self.gear_bias, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and -20 <= v <= 20
            for v in self.gear_bias.values()
        ):
            raise ValueError("settings.gear_bias must map pathway names to numbers in [-20, 20]")
        if self.routing not in (None, "soft", "top1") and not str(self.routing).startswith("force="):
            raise ValueError(
                f"settings.routing ({self.routing!r}) must be 'soft', 'top1', 'force=<pathway>' or null"
            )
        parse_gear_sampling(self.gear_sampling)  # raises naming the spec

    @classmethod
    def parse(cls, obj: dict | None) -> Settings:
        obj = dict(obj or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"settings: unknown key(s) {unknown}; valid: {sorted(known)}")
        return cls(**obj)


@dataclass
class TurnResult:
    reply: str
    seq: int | None  # the NPC message's seq (None for a probe)
    x_qwythos: dict


class Dialogue:
    def __init__(self, engine: Engine, store: Store, embed: Callable[[list[str]], np.ndarray] | None = None):
        self.engine, self.store, self.embed = engine, store, embed
        self.voice = Voice(engine)
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def settings(self, obj: dict | None) -> Settings:
        """Parse settings and check the pathways they name against this model's."""
        st = Settings.parse(obj)
        unknown = sorted(set(st.gear_bias) - set(self.engine.pathways))
        if st.routing is not None:
            try:
                parse_routing(st.routing, self.engine.pathways)
            except ValueError as e:
                raise ValueError(f"settings.routing: {str(e).removeprefix('--mode ')}") from None
        if unknown:
            raise ValueError(
                f"settings.gear_bias: unknown pathway(s) {unknown}; this model's: {self.engine.pathways}"
            )
        return st

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer.encode(text, add_special_tokens=False))

    # ------------------------------------------------------------ sessions and events

    def session(self, owner: str, session_id: int) -> tuple[dict, Card, Settings]:
        s = self.store.get_session(owner, session_id)
        if s is None:
            raise NotFound(f"session {session_id} not found")
        character = self.store.get_character(owner, s["character_id"])
        return s, character["card"], self.settings(s["settings"])

    def create_session(
        self,
        owner: str,
        character_id: int,
        player: str,
        events: list[dict] = (),
        settings: dict | None = None,
    ) -> int:
        """A new session; its initial events are all checked before anything is stored."""
        self.settings(settings)
        if self.store.get_character(owner, character_id) is None:
            raise NotFound(f"character {character_id} not found")
        log = EventLog()
        for i, e in enumerate(events):
            _checked(lambda e=e: log.append(parse_event(e)), f"events[{i}]")
        sid = self.store.create_session(owner, character_id, player, settings or {})
        self.store.add_events(sid, log.events)
        return sid

    def push_events(self, owner: str, session_id: int, events: list[dict]) -> tuple[list, GameState]:
        """Check every event against the state, then store them all (or nothing)."""
        self.session(owner, session_id)
        with self._lock(session_id):
            log = EventLog(self.store.events(session_id))
            before = len(log.events)
            for i, e in enumerate(events):
                _checked(lambda e=e: log.append(parse_event(e)), f"events[{i}]")
            new = log.events[before:]
            self.store.add_events(session_id, new)
            return new, log.state

    def state(self, owner: str, session_id: int) -> GameState:
        self.session(owner, session_id)
        return EventLog(self.store.events(session_id)).state

    # ------------------------------------------------------------ one turn

    def turn(
        self,
        owner: str,
        session_id: int,
        message: str,
        probe: bool = False,
        trace: bool = False,
        steering: dict | None = None,
        on_token: Callable[[dict], None] | None = None,
    ) -> TurnResult:
        """The NPC's reply to ``message``. ``probe``: answer without appending anything; ``steering``:
        settings for this turn only; ``on_token``: each reply token as decided (a repair first sends
        {"restart": True})."""
        session, card, settings = self.session(owner, session_id)
        if steering:
            settings = self.settings({**asdict(settings), **steering})
        with self._lock(session_id):
            return self._turn(session, card, settings, message, probe, trace, on_token)

    def record(self, owner: str, session_id: int, message: str, reply: str) -> int:
        """An authored exchange (a cut-scene, a scripted line, a replayed log): the player's message and the
        NPC's given reply appended and remembered exactly as a turn would (player facts to the ledger, the
        recap), without generating. Returns the NPC message's seq."""
        session, card, st = self.session(owner, session_id)
        with self._lock(session_id):
            sid = session["id"]
            history = self.store.messages(sid)
            x = {"authored": True}
            said = player_facts(message)
            return self._remember(
                sid, history, message, reply, x, said, [], st, session["player_name"], card.name
            )

    def _turn(self, session, card: Card, st: Settings, message: str, probe: bool, trace: bool, on_token):
        sid, user = session["id"], session["player_name"]
        # ingest
        state = EventLog(self.store.events(sid)).state
        history = self.store.messages(sid)
        book: Lorebook | None = lorebook_from_card_book(card.character_book) if card.character_book else None
        said = player_facts(message)
        ledger = self.store.facts(sid) + [
            {"subject": n.subject, "attribute": n.attribute, "value": n.value} for n in said
        ]
        ledger = list({(r["subject"], r["attribute"]): r for r in ledger}.values())  # the newest per key
        # ground: the state's tools, and the player's own statements from the ledger
        queries = detect(message, state) if st.grounding else []
        facts = ground(queries, state)
        if st.grounding:
            for q, f in ask_ledger(message, ledger):
                queries.append(q)
                facts.append(f)
        # select
        cut = max(0, len(history) - st.window)
        window, older = history[cut:], history[:cut]
        summary = self.store.latest_summary(sid)
        recalled = recall(message, older, now=len(history) + 1, k=st.recall, embed=self.embed)
        lines = example_lines(card, user)
        previous = next((m["meta"].get("voice") for m in reversed(history) if m["role"] == "assistant"), None)
        locked = bool(st.voice_lock and lines and previous and previous.get("drifted"))
        if locked:
            st = replace(st, narrative_bias=min(20.0, st.narrative_bias + st.voice_boost))
        c = ctx.build(
            card,
            book,
            window,
            message,
            user,
            self.count_tokens,
            st.budget,
            facts=[f.text for f in facts],
            ledger=ledger if st.ledger else [],
            recap=summary["text"] if summary else "",
            recalled=recalled,
            reminder=reminder(card.name, lines) if locked else "",
        )
        prefix, tail = self._ids(c)
        # voice, check, at most one repair
        reply = self._speak(prefix, tail, facts, st, True, on_token)
        asked = [q.item for q in queries if q.tool in ("inventory", "where_is")]
        contradictions, repaired, checked = check_claims(reply.text, state, card.name, asked), False, 1
        if contradictions and st.repair:
            pins = facts + [_truth(state, x) for x in contradictions if x.kind != "persona"]
            if on_token is not None:
                on_token({"restart": True})
            again = self._speak(prefix, tail, pins, st, False, on_token)
            still, checked = check_claims(again.text, state, card.name, asked), 2
            if len(still) < len(contradictions):
                reply, repaired, contradictions = again, not still, still
        # remember
        x = {
            "context": {
                "report": c.report_dicts(),
                "prompt_tokens": reply.prompt_tokens,
                "budget": c.budget,
                "over_budget": c.over_budget,
                "processed_tokens": reply.processed_tokens,
                "prefix_reused_tokens": reply.prefix_reused,
            },
            "grounding": {
                "tool_calls": [asdict(q) for q in queries],
                "verified_facts": [asdict(f) for f in facts],
            },
            "consistency": {
                "checked": checked,
                "contradictions": [asdict(k) for k in contradictions],
                "repaired": repaired,
            },
            "gear": gear_summary(reply, self.engine.pathways, self.engine.tokenizer, trace),
            "voice": voice_report(reply.text, lines, st, locked),
        }
        seq = None
        if not probe:
            seq = self._remember(sid, history, message, reply.text, x, said, facts, st, user, card.name)
        return TurnResult(reply.text, seq, x)

    def _ids(self, c: ctx.Context) -> tuple[list[int], list[int]]:
        full = self.engine.encode_chat(c.messages)
        prefix = list(
            self.engine.tokenizer.apply_chat_template(
                c.prefix, add_generation_prompt=False, tokenize=True, return_dict=False
            )
        )
        if full[: len(prefix)] != prefix:  # a template that renders the prefix differently: no reuse
            return [], full
        return prefix, full[len(prefix) :]

    def _speak(self, prefix: list[int], tail: list[int], facts: list, st: Settings, first: bool, on_token):
        bias = [0.0] * len(self.engine.pathways)
        names = self.engine.pathways
        if "narrative" in names:
            bias[names.index("narrative")] += st.narrative_bias
        if "reasoning" in names:
            bias[names.index("reasoning")] -= st.narrative_bias
        for name, value in st.gear_bias.items():
            bias[names.index(name)] += value
        if facts:
            pins = " ".join(dict.fromkeys(f.text for f in facts))
            lead = [Free(st.lead_tokens, SENTENCE_END)] if st.lead_tokens and first else []
            plan = [*lead, Pinned(" " + pins if lead else pins), Free(st.reply_tokens)]
        else:
            plan = [Free(st.reply_tokens)]
        seed = None if st.seed is None else st.seed + (0 if first else 1)
        params = SamplingParams(repetition_penalty=st.repetition_penalty, seed=seed)
        gs: GearSampling | None = for_model(parse_gear_sampling(st.gear_sampling), names)
        return self.voice.speak(prefix, tail, plan, bias, params, gs, on_token, st.routing)

    def _remember(self, sid, history, message, reply, x, said, facts, st: Settings, user, char) -> int:
        turn_facts = [(n.subject, n.attribute, n.value, None) for n in said]
        turn_facts += [(f.subject, f.attribute, f.value, f.source_event) for f in facts]
        n = len(history) + 2
        summary = None
        last = self.store.latest_summary(sid)
        upto = last["upto_seq"] if last else 0
        if n - upto >= st.recap_every + st.window:  # messages leaving the window get recapped
            msgs = history + [{"seq": n - 1, "role": "user", "content": message}]
            leaving = [m for m in msgs if upto < m["seq"] <= n - st.window]
            lines = (last["text"].splitlines() if last else []) + recap_lines(leaving, user, char)
            summary = (n - st.window, "\n".join(fit_lines(lines, self.count_tokens, st.recap_tokens)))
        return self.store.add_turn(sid, [("user", message, {}), ("assistant", reply, x)], turn_facts, summary)

    def _lock(self, session_id: int):
        with self._guard:
            lock = self._locks.setdefault(session_id, threading.Lock())
        if not lock.acquire(blocking=False):
            raise Busy(f"session {session_id} is answering another turn; retry when it is done")
        return _Held(lock)


class _Held:
    def __init__(self, lock: threading.Lock):
        self.lock = lock

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _checked(fn, where: str):
    try:
        return fn()
    except ValueError as e:
        field = getattr(e, "field", None)
        e.param = f"{where}.{field}" if field else where  # the API names the field
        raise


def _truth(state: GameState, c: Contradiction):
    return inventory(state, c.subject) if c.kind == "quantity" else where_is(state, c.subject)


def reminder(name: str, lines: list[str]) -> str:
    return f"Speak as {name} does: " + " ".join(f'"{x}"' for x in lines[:2])


def voice_report(text: str, lines: list[str], st: Settings, locked: bool) -> dict:
    """The reply's style similarity to the card's example lines, whether it drifted (the next turn locks
    the voice), and whether this turn ran locked (narrative bias raised, the lines re-injected)."""
    sim = similarity(text, lines)
    return {"similarity": sim, "drifted": sim is not None and sim < st.voice_floor, "locked": locked}


def gear_summary(spoken, pathways: list[str], tokenizer, trace: bool) -> dict:
    g = spoken.gates  # (n, P)
    out: dict = {"pathways": pathways, "tokens": len(spoken.token_ids)}
    if len(spoken.token_ids) == 0:
        return out | {"shares": {p: 0.0 for p in pathways}, "switches": 0}
    top = g.argmax(-1).tolist()
    out["shares"] = {p: round(float((g.argmax(-1) == i).float().mean()), 4) for i, p in enumerate(pathways)}
    out["mean_gate"] = {p: round(float(g[:, i].mean()), 4) for i, p in enumerate(pathways)}
    out["switches"] = sum(1 for a, b in zip(top, top[1:], strict=False) if a != b)
    pins = [i for i, p in enumerate(spoken.pinned) if p]
    if pins:
        out["fact_span_gate"] = {p: round(float(g[pins, i].mean()), 4) for i, p in enumerate(pathways)}
    if trace:
        texts = token_texts(tokenizer, spoken.token_ids)
        out["trace"] = [
            {
                "text": texts[i],
                "pathway": pathways[top[i]],
                "gate": {p: round(float(g[i, j]), 4) for j, p in enumerate(pathways)},
                "pinned": spoken.pinned[i],
            }
            for i in range(len(spoken.token_ids))
        ]
    return out
