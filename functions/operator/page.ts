import { createHash } from "node:crypto";

/**
 * The operator console's page: one HTML document with its style and script inline, no framework
 * and no build step. It asks for the admin token (or takes it from a `#token=` fragment, which
 * never reaches the server), keeps it in sessionStorage and sends it as `Authorization: Bearer`.
 * Everything it shows is set as text, never as HTML.
 */
const STYLE = `
:root { color-scheme: light dark; --bad: #c62828; --ok: #2e7d32; --warn: #ef6c00; --line: #8884; }
* { box-sizing: border-box; }
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 1100px; }
h1 { font-size: 1.3em; margin: 0 0 8px; }
h2 { font-size: 1.1em; margin: 20px 0 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1em; margin: 12px 0 4px; }
form, .bar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 6px 0; }
input { font: inherit; padding: 6px; min-width: 0; flex: 1 1 180px; }
button { font: inherit; padding: 6px 10px; cursor: pointer; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 8px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.card b { display: block; font-size: .85em; opacity: .75; font-weight: normal; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.wrap { word-break: break-word; min-width: 12em; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
#message { min-height: 1.4em; }
[hidden] { display: none !important; }
`;

const SCRIPT = `
"use strict";
const $ = (id) => document.getElementById(id);
const KEY = "adminToken", NAME = "operatorName";
// A token in the fragment (#token=…) never reaches the server: keep it, then drop it from the URL.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem(KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(KEY);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}
function say(text, className) { const m = $("message"); m.textContent = text; m.className = className || ""; }
function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
// A time as the reader reads it (their locale and time zone), the ISO 8601 it was in its title.
function when(iso, text) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const node = el("time", text === undefined ? date.toLocaleString() : text);
  node.dateTime = iso; node.title = iso;
  return node;
}
function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 120 ? seconds + " s" : seconds < 7200 ? Math.round(seconds / 60) + " min" : Math.round(seconds / 3600) + " h";
}

async function api(path, body) {
  const headers = { authorization: "Bearer " + token() };
  const name = sessionStorage.getItem(NAME);
  if (name) headers["x-operator"] = name;
  if (body) headers["content-type"] = "application/json";
  // Relative to the page (\`…/admin\`): "admin/api/…" is under it wherever the API is mounted.
  const response = await fetch("admin/api/" + path, {
    method: body ? "POST" : "GET", headers, body: body ? JSON.stringify(body) : undefined,
    credentials: "omit", cache: "no-store",
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { sessionStorage.removeItem(KEY); showLogin("The admin token was refused."); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(response.status + " " + (data.errcode || "") + " " + (data.error || ""));
  return data;
}

function table(target, columns, rows) {
  const box = typeof target === "string" ? $(target) : target; box.replaceChildren();
  if (rows.length === 0) { box.append(el("p", "None.")); return; }
  const t = el("table"), head = el("tr");
  for (const c of columns) head.append(el("th", c));
  t.append(el("thead")); t.tHead.append(head);
  const tbody = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      // A <time> is text, as a text cell (wrapped); a button keeps its own width.
      if (cell instanceof Node) { const td = el("td", null, cell.nodeName === "TIME" ? "wrap" : undefined); td.append(cell); tr.append(td); }
      else tr.append(el("td", cell === undefined || cell === null ? "–" : cell, "wrap"));
    }
    tbody.append(tr);
  }
  t.append(tbody); box.append(t);
}

function card(label, value, className) {
  const c = el("div", null, "card"); c.append(el("b", label), el("span", value, className)); return c;
}

async function loadStatus() {
  const s = await api("status");
  const hs = s.homeserver;
  const cards = [
    // A homeserver before the v1.7 ping is reachable and supported: its detail says what is
    // unknown, not what is wrong. A ping that failed is (it cannot reach the appservice).
    card("Homeserver", hs.reachable ? (hs.checkedWith === "ping" && !hs.detail ? "reachable, ping " + hs.roundTripMs + " ms" : "reachable") : "unreachable", hs.reachable && (!hs.detail || hs.checkedWith === "versions") ? "ok" : "bad"),
    card("Last transaction", s.lastTransaction ? s.lastTransaction.txnId + ", " + ago(s.lastTransaction.at) : "none seen"),
  ];
  for (const d of ["inbound", "outbound"]) {
    const q = s.queues[d];
    cards.push(card(d + " queue", q.waiting + " waiting, " + q.inFlight + " in flight, " + q.delayed + " delayed; oldest " + age(q.oldestAgeSeconds)));
    cards.push(card(d + " dead letters", s.deadLetters[d], s.deadLetters[d] > 0 ? "bad" : "ok"));
  }
  cards.push(card("Errors (recent)", s.recentErrors.length, s.recentErrors.length > 0 ? "warn" : "ok"));
  cards.push(card("Version", s.version));
  $("health").replaceChildren(...cards);
  $("homeserver-detail").textContent = hs.detail || "";
  table("errors", ["when", "where", "what"], s.recentErrors.map((e) => [when(e.at, ago(e.at)), e.source, e.message + (e.error ? ": " + e.error : "")]));
}

function button(label, onClick) { const b = el("button", label); b.type = "button"; b.addEventListener("click", onClick); return b; }

async function operate(operation, selection, what) {
  if (operation === "discard" && !confirm("Discard " + what + "? It is deleted for good.")) return;
  try {
    const result = await api("dead-letters/" + operation, selection);
    say((operation === "replay" ? "Replayed " : "Discarded ") + result.done.length + (result.skipped.length ? ", skipped " + result.skipped.length + ": " + result.skipped.map((s) => s.why).join("; ") : ""), "ok");
  } catch (error) { say(error.message, "bad"); }
  await refresh();
}

async function loadDeadLetters() {
  const { deadLetters } = await api("dead-letters");
  for (const d of ["inbound", "outbound"]) {
    const list = deadLetters.filter((l) => l.direction === d);
    const rows = list.map((l) => {
      const reason = [l.reason.status, l.reason.errcode, l.reason.error].filter((x) => x !== undefined).join(" ");
      const actions = el("div", null, "bar");
      actions.append(
        button("Replay", () => operate("replay", { direction: d, ids: [l.id] }, "this dead letter")),
        button("Discard", () => operate("discard", { direction: d, ids: [l.id] }, "this dead letter")),
      );
      if (l.roomId) actions.append(
        button("Replay room", () => operate("replay", { direction: d, room: l.roomId }, "every dead letter of " + l.roomId)),
        button("Discard room", () => operate("discard", { direction: d, room: l.roomId }, "every dead letter of " + l.roomId)),
      );
      return [l.roomId || l.group, l.kind, reason, l.attempts, age(l.ageSeconds), actions];
    });
    table(d + "-dead", ["room", "kind", "reason", "attempts", "age", ""], rows);
    $(d + "-all").hidden = list.length === 0;
  }
}

async function loadTraffic() {
  const t = await api("traffic");
  table("transactions", ["when", "txnId", "events", "outcome"], t.transactions.map((x) => [when(x.at, ago(x.at)), x.txnId, x.events, x.outcome]));
  table("outbound", ["when", "kind", "room", "status", "attempts", "outcome"], t.outbound.map((x) => [when(x.at, ago(x.at)), x.kind, x.roomId || x.userId, x.status, x.attempts, x.outcome + (x.reason ? ": " + x.reason : "")]));
}

// The application's own tables, as it declares them: its columns' fields, as text (times readable).
async function loadSections() {
  const { sections } = await api("sections");
  const loaded = await Promise.all(sections.map(async (s) => ({ s, rows: (await api("sections/" + encodeURIComponent(s.id))).rows })));
  const nodes = [];
  for (const { s, rows } of loaded) {
    const box = el("div", null, "scroll"); box.id = "section-" + s.id;
    table(box, s.columns.map((c) => c.label), rows.map((r) => s.columns.map((c) => (c.time && r[c.key] ? when(r[c.key]) : r[c.key]))));
    nodes.push(el("h2", s.title), box);
  }
  $("sections").replaceChildren(...nodes);
}

let refreshing = false;
async function refresh() {
  if (!token() || refreshing) return;
  refreshing = true;
  try {
    await Promise.all([loadStatus(), loadDeadLetters(), loadTraffic(), loadSections()]);
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
  } catch (error) { if (error.message !== "unauthorized") say(error.message, "bad"); }
  finally { refreshing = false; }
}

function showLogin(text) { $("login").hidden = false; $("console").hidden = true; say(text || "", "bad"); }
$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  if ($("name").value.trim()) sessionStorage.setItem(NAME, $("name").value.trim());
  $("token").value = "";
  start();
});
$("refresh").addEventListener("click", refresh);
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(); });
for (const d of ["inbound", "outbound"]) {
  $(d + "-all").append(
    button("Replay all " + d, () => operate("replay", { direction: d, all: true }, "every " + d + " dead letter")),
    button("Discard all " + d, () => operate("discard", { direction: d, all: true }, "every " + d + " dead letter")),
  );
}
function start() {
  if (!token()) return showLogin();
  $("login").hidden = true; $("console").hidden = false; say("");
  refresh();
}
setInterval(() => { if (document.visibilityState === "visible") refresh(); }, 15000);
start();
`;

const BODY = `
<h1>Appservice console</h1>
<p id="message" role="status"></p>
<form id="login" hidden>
  <input id="token" type="password" autocomplete="off" placeholder="Admin token" aria-label="Admin token" required>
  <input id="name" type="text" autocomplete="off" placeholder="Your name (logged with replays)" aria-label="Your name">
  <button type="submit">Open</button>
</form>
<main id="console" hidden>
  <div class="bar"><button id="refresh" type="button">Refresh</button><button id="logout" type="button">Forget token</button><span id="updated"></span></div>
  <h2>Health</h2>
  <div id="health" class="grid"></div>
  <p id="homeserver-detail"></p>
  <h3>Recent errors</h3>
  <div id="errors" class="scroll"></div>
  <h2>Dead letters</h2>
  <h3>Outbound (calls on the homeserver)</h3>
  <div id="outbound-all" class="bar" hidden></div>
  <div id="outbound-dead" class="scroll"></div>
  <h3>Inbound (events the application failed on)</h3>
  <div id="inbound-all" class="bar" hidden></div>
  <div id="inbound-dead" class="scroll"></div>
  <h2>Recent traffic</h2>
  <h3>Transactions</h3>
  <div id="transactions" class="scroll"></div>
  <h3>Outbound calls</h3>
  <div id="outbound" class="scroll"></div>
  <div id="sections"></div>
</main>
`;

const hash = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;

export const OPERATOR_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Appservice console</title>
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`;

/**
 * Only this page's own style and script run (by their hashes), it talks only to its own origin,
 * and no other site may frame it.
 */
export const OPERATOR_PAGE_CSP = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "connect-src 'self'",
  "img-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

export const OPERATOR_PAGE_HEADERS = {
  "content-type": "text/html; charset=utf-8",
  "content-security-policy": OPERATOR_PAGE_CSP,
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};
