"""`qwythos dialogue`: play a character in the terminal on the dialogue engine (the same SQLite store as
``qwythos serve``, owner ``local``, so a session started here opens in the playground and back).

Lines are the player's; lines starting with / are the game side and the inspector (``HELP``). Every reply
streams with each token coloured by the pathway that carried it (pinned verified facts bold), then a line
of pathway shares, switches and any repair.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TextIO

from ..console import prompt_lines
from ..inference.trace import PALETTE, RESET
from .cards import read_card
from .state import event_to_dict
from .turn import Dialogue

OWNER = "local"
BOLD = "\x1b[1m"
HELP = """commands:
  /give ITEM [QTY] [LOCATION]   the player gets items          /take ITEM [QTY]   the player loses them
  /move ITEM LOCATION           put an item somewhere          /set KEY VALUE     a value (price.lamp 7)
  /set ITEM.location PLACE      the same as /move              /quest QUEST FLAG [true|false]
  /happen TEXT                  something happened             /state             inventory, values, quests
  /why                          the last reply's context report, grounding and consistency
  /probe TEXT                   answer without appending       /fork [SEQ]        a new session up to SEQ
  /export FILE                  the session as JSONL           /sessions          this store's sessions
  /help  /quit"""


def _scalar(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_command(line: str) -> tuple[str, list[str]]:
    words = shlex.split(line[1:])
    if not words:
        raise ValueError("an empty command; /help lists them")
    return words[0].lower(), words[1:]


def event_for(verb: str, args: list[str]) -> dict | None:
    """The event a game-side command pushes (None: not a game-side command)."""

    def need(n: int, usage: str) -> None:
        if len(args) < n:
            raise ValueError(f"/{verb} needs {usage}")

    if verb == "give":
        need(1, "ITEM [QTY] [LOCATION]")
        ev = {"type": "inventory.add", "item": args[0], "qty": _scalar(args[1]) if len(args) > 1 else 1}
        if len(args) > 2:
            ev["location"] = " ".join(args[2:])
        return ev
    if verb == "take":
        need(1, "ITEM [QTY]")
        return {"type": "inventory.remove", "item": args[0], "qty": _scalar(args[1]) if len(args) > 1 else 1}
    if verb == "move":
        need(2, "ITEM LOCATION")
        return {"type": "move", "item": args[0], "location": " ".join(args[1:])}
    if verb == "set":
        need(2, "KEY VALUE")
        if args[0].endswith(".location"):
            return {"type": "move", "item": args[0].removesuffix(".location"), "location": " ".join(args[1:])}
        return {"type": "set", "key": args[0], "value": _scalar(" ".join(args[1:]))}
    if verb == "quest":
        need(2, "QUEST FLAG [true|false]")
        return {
            "type": "quest",
            "quest": args[0],
            "flag": args[1],
            "value": _scalar(args[2]) if len(args) > 2 else True,
        }
    if verb == "happen":
        need(1, "TEXT")
        return {"type": "happening", "text": " ".join(args)}
    return None


class Player:
    """One terminal session on a Dialogue: commands, turns streamed with gear colours."""

    def __init__(self, dialogue: Dialogue, session_id: int, out: TextIO, color: bool = True):
        self.d, self.sid, self.out, self.color = dialogue, session_id, out, color
        self.pathways = dialogue.engine.pathways
        self.last: dict | None = None  # the last reply's x_qwythos

    def legend(self) -> str:
        if not self.color:
            return "pathways: " + "  ".join(f"[{p}]" for p in self.pathways) + "  (pinned facts in *stars*)"
        marks = [f"{PALETTE[i % len(PALETTE)]}■ {p}{RESET}" for i, p in enumerate(self.pathways)]
        return "pathways: " + "  ".join(marks) + f"  {BOLD}bold{RESET}: a pinned verified fact"

    def _printer(self):
        """The token callback: each delta coloured by its pathway (without colour: a [pathway] marker where
        the pathway changes), a pinned run bold (without colour: in *stars*)."""
        last: list = [None, False]  # pathway, pinned

        def show(ev: dict) -> None:
            if ev.get("restart"):
                self.out.write(("*" if last[1] and not self.color else "") + "\n  (repairing a claim)\n  ")
                last[:] = [None, False]
                return
            if not ev["delta"]:
                return
            gate, pinned = ev["gate"], ev["pinned"]
            p = max(gate, key=gate.get)
            if self.color:
                colour = PALETTE[self.pathways.index(p) % len(PALETTE)]
                self.out.write(colour + (BOLD if pinned else "") + ev["delta"] + RESET)
            else:
                marks = "*" if last[1] and not pinned else ""
                marks += f"[{p}]" if p != last[0] else ""
                marks += "*" if pinned and not last[1] else ""
                self.out.write(marks + ev["delta"])
            last[:] = [p, pinned]
            self.out.flush()

        def end() -> None:
            if last[1] and not self.color:
                self.out.write("*")

        show.end = end
        return show

    def say(self, text: str, probe: bool = False) -> None:
        session, card, _ = self.d.session(OWNER, self.sid)
        self.out.write(f"{card.name}> ")
        show = self._printer()
        r = self.d.turn(OWNER, self.sid, text, probe=probe, on_token=show)
        show.end()
        self.last = r.x_qwythos
        g, k = r.x_qwythos["gear"], r.x_qwythos["consistency"]
        shares = " · ".join(f"{p} {s:.0%}" for p, s in g["shares"].items())
        notes = [shares, f"{g['switches']} switches"]
        if k["repaired"]:
            notes.append("repaired")
        if k["contradictions"]:
            notes.append(f"{len(k['contradictions'])} contradiction(s) left")
        if probe:
            notes.append("probe: not stored")
        self.out.write(f"\n  ({', '.join(notes)})\n")

    def command(self, line: str) -> str:
        verb, args = parse_command(line)
        ev = event_for(verb, args)
        if ev is not None:
            self.d.push_events(OWNER, self.sid, [ev])
            return f"ok: {json.dumps(ev)}"
        if verb == "state":
            return self.state()
        if verb == "why":
            return self.why()
        if verb == "probe":
            self.say(" ".join(args), probe=True)
            return ""
        if verb == "fork":
            msgs = self.d.store.messages(self.sid)
            at = int(args[0]) if args else (msgs[-1]["seq"] if msgs else 0)
            self.sid = self.d.store.fork(OWNER, self.sid, at)
            return f"forked at message {at}: now in session #{self.sid}"
        if verb == "export":
            if not args:
                raise ValueError("/export needs FILE")
            records = self.d.store.export_session(OWNER, self.sid)
            Path(args[0]).write_text("".join(json.dumps(r) + "\n" for r in records))
            return f"wrote {len(records)} records to {args[0]}"
        if verb == "sessions":
            rows = self.d.store.list_sessions(OWNER)
            return "\n".join(
                f"#{s['id']} {s['character']} & {s['player_name']}: {s['messages']} messages" for s in rows
            )
        if verb == "help":
            return HELP
        raise ValueError(f"unknown command /{verb}; /help lists them")

    def state(self) -> str:
        st = self.d.state(OWNER, self.sid)
        lines = [
            f"  {item}: {qty}" + (f" ({st.locations[item]})" if item in st.locations else "")
            for item, qty in sorted(st.inventory.items())
        ]
        lines += [
            f"  {item}: {place}" for item, place in sorted(st.locations.items()) if item not in st.inventory
        ]
        lines += [f"  {k} = {v!r}" for k, v in sorted(st.values.items())]
        lines += [f"  quest {q}: {flags}" for q, flags in sorted(st.quests.items())]
        events = [event_to_dict(e) for e in self.d.store.events(self.sid)]
        return "state:\n" + ("\n".join(lines) or "  (empty)") + f"\n  ({len(events)} events in the log)"

    def why(self) -> str:
        if self.last is None:
            return "no reply yet"
        c, g, k = self.last["context"], self.last["grounding"], self.last["consistency"]
        rows = [
            f"prompt {c['prompt_tokens']} of {c['budget']} tokens; processed {c['processed_tokens']}, "
            f"prefix reused {c['prefix_reused_tokens']}"
        ]
        rows += [
            f"  {'+' if r['included'] else '-'} {r['block']:14s} {r['name'][:40]:40s} "
            f"{r['tokens']:5d}  {r['reason']}"
            for r in c["report"]
        ]
        rows += [f"  tool {q['tool']}({q['item']})" for q in g["tool_calls"]]
        rows += [f"  verified: {f['text']}" for f in g["verified_facts"]]
        rows.append(
            f"  consistency: checked {k['checked']}x, repaired {k['repaired']}, "
            f"{len(k['contradictions'])} contradiction(s) left"
        )
        return "\n".join(rows)


def start(
    dialogue: Dialogue, card: str | Path | None, player: str, session: int | None, settings: dict
) -> int:
    """The session to play: ``session`` if given (checked), else a new one on ``card``."""
    if session is not None:
        try:
            dialogue.session(OWNER, session)
        except LookupError as e:
            raise ValueError(f"--session {session}: {e}; /sessions in a game lists them") from None
        return session
    if card is None:
        raise ValueError("--card: name a character card (PNG or JSON), or pass --session ID to resume")
    path = Path(card)
    if not path.is_file():
        raise ValueError(f"--card {card}: no such file; pass a SillyTavern card as PNG or JSON")
    data = path.read_bytes()
    avatar = data if data.startswith(b"\x89PNG") else None
    cid = dialogue.store.add_character(OWNER, read_card(path), avatar)
    return dialogue.create_session(OWNER, cid, player, [], settings)


def run(dialogue: Dialogue, session_id: int, stdin: TextIO, out: TextIO, color: bool = True) -> int:
    """The loop; returns the number of replies. Ends at EOF or /quit."""
    p = Player(dialogue, session_id, out, color)
    s, card, _ = dialogue.session(OWNER, session_id)
    out.write(
        f"session #{session_id}: {card.name} and {s['player_name']}. {p.legend()}\n(/help for commands)\n"
    )
    replies = 0
    for line in prompt_lines(stdin, out, f"{s['player_name']}> "):
        try:
            if line.startswith("/"):
                text = p.command(line)
                if text:
                    out.write(text + "\n")
            else:
                p.say(line)
                replies += 1
        except (ValueError, LookupError) as e:  # EventError, NotFound, settings: the message names the field
            out.write(f"error: {e}\n")
    return replies
