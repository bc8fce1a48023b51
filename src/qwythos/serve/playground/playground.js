// The dialogue playground: plain JS over the dialogue API of `qwythos serve` (README, "The dialogue engine").
// Reads top to bottom: the API client, the game-side commands, rendering (characters, sessions, chat with
// gear-coloured tokens, state, reasons, steering), then the event wiring. No library, nothing from a CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "qwythos.playground.key"; // sessionStorage: the key lives as long as the tab
const ui = {
  pathways: ["reasoning", "narrative"],
  characters: [],
  character: null, // the chosen character's view
  session: null, // the open session's view (GET /v1/sessions/{id})
  messages: [],
  busy: false,
  avatarUrl: null,
};

// ------------------------------------------------------------------ the API client

class ApiError extends Error {}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(res) {
  let text = await res.text();
  try {
    const e = JSON.parse(text).error;
    text = e.message + (e.param ? ` [${e.param}]` : "");
  } catch (_) { /* not the OpenAI error shape: show the body as it is */ }
  return new ApiError(`${res.status}: ${text || res.statusText}`);
}

async function api(path, { method = "GET", json, body, type } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
    init.headers["Content-Type"] = type;
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  const kind = (res.headers.get("Content-Type") || "").split(";")[0].trim();
  return kind === "application/json" ? res.json() : res; // JSONL exports and PNGs are read by the caller
}

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function guarded(fn) {
  clearError();
  try {
    await fn();
  } catch (err) {
    showError(err);
  }
}

// SSE over a POST (EventSource cannot POST): calls onEvent with each `data:` object until [DONE].
async function streamTurn(path, json, onEvent) {
  const res = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(json),
  });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

// ------------------------------------------------------------------ game-side commands

// One command per line: give ITEM QTY [LOCATION] | take ITEM QTY | move ITEM LOCATION | set KEY VALUE |
// quest QUEST FLAG [true|false] | happening TEXT. Quote words with spaces: give "silver key" 1 "the drawer".
function words(line) {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1] : m[2]));
}

function scalar(text) {
  if (/^-?\d+$/.test(text)) return Number(text);
  if (/^-?\d*\.\d+$/.test(text)) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  return text;
}

function parseCommand(line, where) {
  const [verb, ...rest] = words(line.trim());
  const need = (n, usage) => {
    if (rest.length < n) throw new ApiError(`${where}: '${verb}' needs ${usage}`);
  };
  switch (verb) {
    case "give": {
      need(1, "ITEM [QTY] [LOCATION]");
      const ev = { type: "inventory.add", item: rest[0], qty: rest.length > 1 ? scalar(rest[1]) : 1 };
      if (rest.length > 2) ev.location = rest.slice(2).join(" ");
      return ev;
    }
    case "take":
      need(1, "ITEM [QTY]");
      return { type: "inventory.remove", item: rest[0], qty: rest.length > 1 ? scalar(rest[1]) : 1 };
    case "move":
      need(2, "ITEM LOCATION");
      return { type: "move", item: rest[0], location: rest.slice(1).join(" ") };
    case "set":
      need(2, "KEY VALUE");
      return { type: "set", key: rest[0], value: scalar(rest.slice(1).join(" ")) };
    case "quest":
      need(2, "QUEST FLAG [true|false]");
      return { type: "quest", quest: rest[0], flag: rest[1], value: rest.length > 2 ? scalar(rest[2]) : true };
    case "happening":
      need(1, "TEXT");
      return { type: "happening", text: rest.join(" ") };
    default:
      throw new ApiError(`${where}: unknown command '${verb}'; use give, take, move, set, quest or happening`);
  }
}

function parseCommands(text, what) {
  return text
    .split("\n")
    .map((line, i) => [line, i])
    .filter(([line]) => line.trim() && !line.trim().startsWith("#"))
    .map(([line, i]) => parseCommand(line, `${what}, line ${i + 1}`));
}

async function pushEvents(events) {
  const sid = ui.session && ui.session.id;
  if (!sid) throw new ApiError("start or open a session first");
  await api(`/v1/sessions/${sid}/events`, { method: "POST", json: { events } });
  await loadSession(sid);
}

// ------------------------------------------------------------------ rendering helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const gearClass = (p) => (p === "reasoning" || p === "narrative" ? `g-${p}` : "g-other");
const pct = (x) => `${Math.round(100 * x)}%`;

function gateTitle(gate, pinned) {
  const parts = Object.entries(gate).map(([p, g]) => `${p} ${Number(g).toFixed(3)}`);
  return parts.join(" · ") + (pinned ? " · pinned (a verified fact)" : "");
}

function topPathway(gate) {
  let best = null;
  for (const [p, g] of Object.entries(gate)) if (best === null || g > gate[best]) best = p;
  return best;
}

function tokenSpan(text, gate, pinned) {
  const p = topPathway(gate);
  return el("span", {
    class: `tok ${gearClass(p)}${pinned ? " pinned" : ""}`,
    title: gateTitle(gate, pinned),
    "data-pathway": p,
    text,
  });
}

function renderLegend() {
  const legend = $("legend");
  legend.replaceChildren("Tokens by the pathway that carried them (hover for the gate): ");
  for (const p of ui.pathways) legend.append(el("span", { class: `tok ${gearClass(p)}`, text: p }), " ");
  legend.append(el("span", { class: "tok g-reasoning pinned", text: "pinned fact" }));
}

// ------------------------------------------------------------------ characters

async function loadCharacters(select) {
  const list = await api("/v1/characters");
  ui.characters = list.data;
  const box = $("characters");
  box.replaceChildren(...list.data.map((c) => el("option", { value: c.id, text: `${c.name} (#${c.id})` })));
  const chosen = select ?? (ui.character && ui.character.id) ?? (list.data[0] && list.data[0].id);
  if (chosen) {
    box.value = String(chosen);
    await chooseCharacter(Number(chosen));
  }
}

async function chooseCharacter(id) {
  const c = ui.characters.find((x) => x.id === id);
  if (!c) return;
  ui.character = c;
  $("character-name").textContent = c.name;
  const img = $("avatar");
  if (ui.avatarUrl) URL.revokeObjectURL(ui.avatarUrl);
  ui.avatarUrl = null;
  img.hidden = true;
  if (c.has_avatar) {
    const res = await api(`/v1/characters/${id}/card.png`);
    ui.avatarUrl = URL.createObjectURL(await res.blob());
    img.src = ui.avatarUrl;
    img.alt = `${c.name}'s portrait`;
    img.hidden = false;
  }
}

async function uploadCard(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const png = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
  const c = await api("/v1/characters", {
    method: "POST",
    body: bytes,
    type: png ? "image/png" : "application/json",
  });
  await loadCharacters(c.id);
}

// ------------------------------------------------------------------ sessions

async function loadSessions() {
  const list = await api("/v1/sessions");
  const box = $("sessions");
  box.replaceChildren(
    ...list.data.map((s) => {
      const fork = s.parent_session ? ` · fork of #${s.parent_session} at ${s.forked_at_message}` : "";
      return el("option", { value: s.id, text: `#${s.id} ${s.character} & ${s.player_name} · ${s.messages} msgs${fork}` });
    }),
  );
  if (ui.session) box.value = String(ui.session.id);
}

async function startSession(e) {
  e.preventDefault();
  if (!ui.character) throw new ApiError("choose or upload a character first");
  const events = parseCommands($("initial-state").value, "initial state");
  const s = await api("/v1/sessions", {
    method: "POST",
    json: {
      character_id: ui.character.id,
      player_name: $("player-name").value,
      events,
      settings: { budget: Number($("budget").value) },
    },
  });
  await openSession(s.id);
}

async function openSession(sid) {
  await loadSession(sid);
  await loadMessages();
  await loadSessions();
  $("message").focus();
}

async function loadSession(sid) {
  ui.session = await api(`/v1/sessions/${sid}`);
  const s = ui.session;
  const fork = s.parent_session ? `, forked from #${s.parent_session} at message ${s.forked_at_message}` : "";
  $("session-title").textContent = `#${s.id}: ${s.character} and ${s.player_name}${fork}`;
  for (const id of ["message", "send", "export"]) $(id).disabled = false;
  renderState(s.state);
  renderSessionReasons(s);
  const events = await api(`/v1/sessions/${sid}/events`);
  renderEvents(events.data);
}

async function loadMessages() {
  const list = await api(`/v1/sessions/${ui.session.id}/messages`);
  ui.messages = list.data;
  $("log").replaceChildren(...ui.messages.map((m) => renderMessage(m)));
  scrollLog();
  const last = [...ui.messages].reverse().find((m) => m.role === "assistant");
  if (last) renderWhy(last.meta, last.seq);
}

async function forkAt(seq) {
  const s = await api(`/v1/sessions/${ui.session.id}/fork`, { method: "POST", json: { at_message: seq } });
  await openSession(s.id);
}

async function exportSession() {
  const res = await api(`/v1/sessions/${ui.session.id}/export`);
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: `session-${ui.session.id}.jsonl` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ------------------------------------------------------------------ the conversation

function scrollLog() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function gearLine(gear, consistency, voice) {
  const bits = [];
  if (gear && gear.shares) {
    bits.push(Object.entries(gear.shares).map(([p, s]) => `${p} ${pct(s)}`).join(" · "));
    bits.push(`${gear.switches} switch${gear.switches === 1 ? "" : "es"}`);
  }
  if (consistency) {
    const n = (consistency.contradictions || []).length;
    if (consistency.repaired) bits.push("repaired");
    if (n) bits.push(`${n} contradiction${n === 1 ? "" : "s"} left`);
  }
  if (voice && voice.similarity !== null && voice.similarity !== undefined) {
    bits.push(`voice ${voice.similarity.toFixed(2)}${voice.locked ? " (locked)" : ""}${voice.drifted ? " drifted" : ""}`);
  }
  return bits.join(" · ");
}

function fillReply(body, meta) {
  const trace = meta && meta.gear && meta.gear.trace;
  if (!trace) return false;
  body.replaceChildren(...trace.map((t) => tokenSpan(t.text, t.gate, t.pinned)));
  return true;
}

function renderMessage(m, { probe = false } = {}) {
  const npc = m.role === "assistant";
  const who = npc ? (ui.session ? ui.session.character : "NPC") : ui.session ? ui.session.player_name : "Player";
  const body = el("span", { class: "body" });
  if (!(npc && fillReply(body, m.meta))) body.textContent = m.content;
  const meta = el("div", { class: "meta" });
  if (npc) meta.append(el("span", { class: "gears", text: gearLine(m.meta.gear, m.meta.consistency, m.meta.voice) }));
  if (m.seq) {
    meta.append(
      el("button", { type: "button", class: "fork", "aria-label": `Fork the session at message ${m.seq}`, text: "fork here", onclick: () => guarded(() => forkAt(m.seq)) }),
    );
    if (npc) {
      meta.append(
        el("button", { type: "button", class: "why", "aria-label": `Why reply ${m.seq} said so`, text: "why?", onclick: () => renderWhy(m.meta, m.seq) }),
      );
    }
  } else if (probe) {
    meta.append(el("span", { class: "pill", text: "probe: not stored" }));
  }
  return el(
    "div",
    { class: `msg ${m.role}${probe ? " probe" : ""}`, "data-seq": m.seq ?? "" },
    el("span", { class: "who", text: `${who}:` }),
    body,
    meta,
  );
}

function steering() {
  const st = {
    narrative_bias: Number($("narrative-bias").value),
    reply_tokens: Number($("reply-tokens").value),
    grounding: $("grounding-on").checked,
    repair: $("repair-on").checked,
    routing: $("routing").value || null,
    gear_bias: {},
  };
  for (const p of ui.pathways) st.gear_bias[p] = Number($(`bias-${p}`).value);
  st.gear_sampling = ui.pathways
    .map((p) => `${p}:t=${Number($(`temp-${p}`).value)},top_p=${Number($(`topp-${p}`).value)}`)
    .join(";");
  return st;
}

async function sendTurn(e) {
  e.preventDefault();
  const text = $("message").value.trim();
  if (!text || ui.busy) return;
  const probe = $("probe").checked;
  ui.busy = true;
  $("send").disabled = true;
  const log = $("log");
  log.append(renderMessage({ role: "user", content: text, seq: null }, { probe }));
  const pending = renderMessage({ role: "assistant", content: "", seq: null, meta: {} }, { probe });
  pending.classList.add("pending");
  const body = pending.querySelector(".body");
  log.append(pending);
  scrollLog();
  let result = null;
  try {
    await streamTurn(
      `/v1/sessions/${ui.session.id}/turns`,
      { message: text, probe, stream: true, trace: true, steering: steering() },
      (ev) => {
        if (ev.error) throw new ApiError(ev.error.message + (ev.error.param ? ` [${ev.error.param}]` : ""));
        if (ev.object === "dialogue.turn.chunk") {
          if (ev.restart) body.replaceChildren();
          else if (ev.delta) body.append(tokenSpan(ev.delta, ev.gate, ev.pinned));
          scrollLog();
        } else if (ev.object === "dialogue.turn") {
          result = ev;
        }
      },
    );
    $("message").value = "";
  } finally {
    ui.busy = false;
    $("send").disabled = false;
  }
  if (!result) throw new ApiError("the stream ended without a reply");
  const x = result.x_qwythos;
  if (probe) {
    fillReply(body, x);
    pending.classList.remove("pending");
    pending.querySelector(".gears").textContent = gearLine(x.gear, x.consistency, x.voice);
    renderWhy(x, null);
    return;
  }
  await loadSession(ui.session.id);
  await loadMessages();
  await loadSessions();
}

// ------------------------------------------------------------------ the game side

function renderState(state) {
  const rows = [];
  const items = new Set([...Object.keys(state.inventory), ...Object.keys(state.locations)]);
  for (const item of [...items].sort()) {
    const held = state.inventory[item] || 0;
    const change = el(
      "td",
      {},
      el("button", { type: "button", "aria-label": `Give one more ${item}`, text: "+1", onclick: () => guarded(() => pushEvents([{ type: "inventory.add", item, qty: 1 }])) }),
    );
    if (held > 0) {
      change.append(
        el("button", { type: "button", "aria-label": `Take one ${item}`, text: "−1", onclick: () => guarded(() => pushEvents([{ type: "inventory.remove", item, qty: 1 }])) }),
      );
    }
    rows.push(
      el("tr", { "data-item": item }, el("td", { text: item }), el("td", { class: "held", text: String(held) }), el("td", { text: state.locations[item] || "carried" }), change),
    );
  }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "nothing held" })));
  $("inventory").tBodies[0].replaceChildren(...rows);
  const values = $("values");
  values.replaceChildren();
  for (const [k, v] of Object.entries(state.values)) values.append(el("dt", { text: k }), el("dd", { text: JSON.stringify(v) }));
  for (const [q, flags] of Object.entries(state.quests)) {
    const text = Object.entries(flags).map(([f, v]) => `${f}: ${v ? "yes" : "no"}`).join(", ");
    values.append(el("dt", { text: `quest ${q}` }), el("dd", { text }));
  }
  if (!values.children.length) values.append(el("dd", { class: "muted", text: "no values or quests" }));
}

function describeEvent(e) {
  switch (e.type) {
    case "inventory.add": return `give ${e.qty} ${e.item}${e.location ? ` (${e.location})` : ""}`;
    case "inventory.remove": return `take ${e.qty} ${e.item}`;
    case "move": return `move ${e.item} → ${e.location}`;
    case "set": return `set ${e.key} = ${JSON.stringify(e.value)}`;
    case "quest": return `quest ${e.quest}: ${e.flag} = ${e.value}`;
    case "happening": return `happening: ${e.text}`;
    default: return JSON.stringify(e);
  }
}

function renderEvents(events) {
  $("events").replaceChildren(
    ...events.map((e) => el("li", { value: e.id, text: `${describeEvent(e)}${e.turn ? ` · after message ${e.turn}` : ""}` })),
  );
}

async function addOrRemove(remove) {
  const item = $("add-item").value.trim();
  if (!item) throw new ApiError("Item: name the item to add or remove");
  const qty = scalar($("add-qty").value.trim() || "1");
  const ev = remove ? { type: "inventory.remove", item, qty } : { type: "inventory.add", item, qty };
  const where = $("add-where").value.trim();
  if (!remove && where) ev.location = where;
  await pushEvents([ev]);
}

// ------------------------------------------------------------------ why it answered so

function renderSessionReasons(s) {
  $("ledger").replaceChildren(
    ...(s.ledger.length
      ? s.ledger.map((f) => el("li", { text: `${f.subject} · ${f.attribute}: ${f.value}${f.source_event ? ` (event ${f.source_event})` : ""}` }))
      : [el("li", { class: "muted", text: "no facts yet" })]),
  );
  $("recap").textContent = s.recap || "(no recap yet: it starts once messages leave the window)";
  const c = s.consistency;
  $("consistency").textContent =
    `session: ${c.replies_checked} replies checked, ${c.contradictions} contradictions left, ${c.repaired} repaired`;
}

function renderWhy(x, seq) {
  if (!x || !x.context) return;
  $("why-turn").textContent = seq ? `Reply at message ${seq}` : "The probe (not stored)";
  const ctx = x.context;
  $("why-summary").replaceChildren(
    el("p", { class: "small", text: `prompt ${ctx.prompt_tokens} tokens of a ${ctx.budget} budget${ctx.over_budget ? " (over budget!)" : ""} · processed this turn ${ctx.processed_tokens} · prefix reused ${ctx.prefix_reused_tokens}` }),
  );
  $("context-report").tBodies[0].replaceChildren(
    ...ctx.report.map((r) =>
      el("tr", { class: r.included ? "included" : "skipped" }, el("td", { text: r.block }), el("td", { text: r.name }), el("td", { text: String(r.tokens) }), el("td", { text: r.included ? "yes" : "no" }), el("td", { text: r.reason })),
    ),
  );
  const g = x.grounding || { tool_calls: [], verified_facts: [] };
  const lines = [
    ...g.tool_calls.map((q) => `tool ${q.tool}(${q.item}${q.qty ? `, ${q.qty}` : ""})`),
    ...g.verified_facts.map((f) => `verified: ${f.text}${f.source_event ? ` (event ${f.source_event})` : ""}`),
  ];
  $("grounding").replaceChildren(...(lines.length ? lines.map((t) => el("li", { text: t })) : [el("li", { class: "muted", text: "no state question detected" })]));
  const k = x.consistency || { checked: 0, contradictions: [], repaired: false };
  const turn = el("p", { class: "small" }, `this reply: checked ${k.checked}×, ${k.repaired ? "repaired" : "no repair"}`);
  for (const c of k.contradictions) turn.append(el("br"), el("span", { class: "bad", text: `contradiction: "${c.claim}" (${c.kind}: said ${c.said}, truth ${c.truth})` }));
  const prev = $("consistency").nextElementSibling;
  if (prev && prev.classList.contains("turn-consistency")) prev.remove();
  turn.classList.add("turn-consistency");
  $("consistency").after(turn);
}

// ------------------------------------------------------------------ steering controls

function renderSteering() {
  const biases = $("bias-sliders");
  biases.replaceChildren();
  const sampling = $("sampling");
  sampling.replaceChildren();
  for (const p of ui.pathways) {
    const out = el("output", { id: `bias-${p}-out`, text: "0" });
    const slider = el("input", { id: `bias-${p}`, type: "range", min: -5, max: 5, step: 0.5, value: 0 });
    slider.addEventListener("input", () => (out.textContent = slider.value));
    biases.append(el("label", { for: `bias-${p}` }, `Gear bias: ${p} `, out), slider);
    const t = p === "reasoning" ? 0 : 0.8;
    sampling.append(
      el("label", { for: `temp-${p}`, text: `${p} temperature` }),
      el("input", { id: `temp-${p}`, type: "number", min: 0, max: 2, step: 0.05, value: t }),
      el("label", { for: `topp-${p}`, text: `${p} top-p` }),
      el("input", { id: `topp-${p}`, type: "number", min: 0.05, max: 1, step: 0.05, value: p === "reasoning" ? 1 : 0.95 }),
    );
  }
}

// ------------------------------------------------------------------ wiring

async function connect() {
  const models = await api("/v1/models");
  const m = models.data[0];
  ui.pathways = m.pathways;
  $("model").textContent = `model ${m.id} · pathways ${m.pathways.join(", ")} · routing ${m.default_mode}`;
  renderLegend();
  renderSteering();
  await loadCharacters();
  await loadSessions();
}

function wire() {
  const stored = sessionStorage.getItem(KEY_STORE);
  if (stored) $("api-key").value = stored;
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    guarded(connect);
  });
  $("characters").addEventListener("change", (e) => guarded(() => chooseCharacter(Number(e.target.value))));
  $("card-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) guarded(() => uploadCard(file)).then(() => (e.target.value = ""));
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) guarded(() => uploadCard(file));
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("card-file").click();
    }
  });
  $("session-form").addEventListener("submit", (e) => guarded(() => startSession(e)));
  $("sessions").addEventListener("change", (e) => guarded(() => openSession(Number(e.target.value))));
  $("refresh").addEventListener("click", () => guarded(connect));
  $("export").addEventListener("click", () => guarded(exportSession));
  $("turn-form").addEventListener("submit", (e) => guarded(() => sendTurn(e)));
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("turn-form").requestSubmit();
    }
  });
  $("add-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(() => addOrRemove(false));
  });
  $("remove").addEventListener("click", () => guarded(() => addOrRemove(true)));
  $("set-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(() => pushEvents([{ type: "set", key: $("set-key").value.trim(), value: scalar($("set-value").value.trim()) }]));
  });
  $("quest-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = scalar($("quest-value").value.trim() || "true");
    guarded(() => pushEvents([{ type: "quest", quest: $("quest-name").value.trim(), flag: $("quest-flag").value.trim(), value }]));
  });
  $("happening-form").addEventListener("submit", (e) => {
    e.preventDefault();
    guarded(() => pushEvents([{ type: "happening", text: $("happening").value.trim() }]));
  });
  const nb = $("narrative-bias");
  nb.addEventListener("input", () => ($("narrative-bias-out").textContent = nb.value));
  guarded(connect);
}

document.addEventListener("DOMContentLoaded", wire);
