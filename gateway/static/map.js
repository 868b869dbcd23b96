// The dispatcher's live map: every technician on shift moving on the streets, each work
// order's site, window and ETA, and the alerts panel. State comes only from the feed.
"use strict";

const params = new URLSearchParams(location.search);
const state = {
  technicians: {}, positions: {}, orders: {}, alerts: {}, now: 0, timezone: "UTC",
  selected: null,
};
window.fieldstream = state; // read by the browser test and handy in the console
let hhmm = makeClock("UTC");

const STATUS_COLOUR = { en_route: "#1769e0", on_site: "#12925a", available: "#7a5cc2", off_shift: "#999" };
const ORDER_COLOUR = {
  booked: "#8a8a8a", assigned: "#5b6f8f", en_route: "#1769e0", arrived: "#12925a",
  in_progress: "#12925a", paused: "#c28a1b", completed_fixed: "#9bbfa8",
  completed_not_fixed: "#c8a46a", cancelled: "#bbb",
};

const map = new RoadMap(document.getElementById("map"), drawOverlay);
const feedParams = { token: params.get("token") || "" };
if (params.get("region")) feedParams.region = params.get("region");
state.feed = new Feed("/ws/dispatch", feedParams, {
  onSnapshot(data) {
    state.technicians = data.technicians;
    state.positions = data.positions;
    state.orders = data.orders;
    state.alerts = data.alerts;
    state.now = data.now;
    state.timezone = data.timezone;
    hhmm = makeClock(data.timezone);
    changed(true);
  },
  onDelta(data) {
    for (const key of ["technicians", "positions", "orders", "alerts"]) {
      for (const [id, doc] of Object.entries(data[key] || {})) {
        if (doc === null) delete state[key][id];
        else state[key][id] = doc;
      }
    }
    for (const p of Object.values(data.positions || {})) if (p && p[4] > state.now) state.now = p[4];
    for (const o of Object.values(data.orders || {})) if (o && o.updated > state.now) state.now = o.updated;
    const lists = ["technicians", "orders", "alerts"].some((key) => Object.keys(data[key] || {}).length);
    changed(lists);
  },
  onHeartbeat(msg) {
    if (msg.now > state.now) { state.now = msg.now; renderClock(); }
  },
  onStatus(kind, text) {
    const node = document.getElementById("conn");
    node.className = `conn ${kind}`;
    node.textContent = text;
  },
});

let panelsQueued = false;
function changed(lists) {
  map.dirty = true;
  renderClock();
  // The side lists are rebuilt in the animation frame that redraws the map (at most once a
  // frame), so the two always show the same state; a delta that only moves vans leaves them.
  if (lists && !panelsQueued) {
    panelsQueued = true;
    requestAnimationFrame(() => { panelsQueued = false; renderPanels(); });
  }
}

function renderClock() {
  document.getElementById("clock").textContent = state.now ? hhmm(state.now) : "--:--";
}

function windowText(order) {
  const promised = `${hhmm(order.window[0])}–${hhmm(order.window[1])}`;
  if (!order.eta) return `window ${promised}`;
  return `window ${promised} · ETA ${hhmm(order.eta[0])}–${hhmm(order.eta[2])}`;
}

function renderPanels() {
  const techs = Object.values(state.technicians);
  const onShift = techs.filter((t) => t.status !== "off_shift");
  const open = Object.values(state.orders).filter((o) => !o.status.startsWith("completed") && o.status !== "cancelled");
  const late = Object.values(state.alerts).filter((a) => a.kind === "late" && a.state === "raised");
  document.getElementById("tech-count").textContent = onShift.length;
  document.getElementById("enroute-count").textContent = techs.filter((t) => t.status === "en_route").length;
  document.getElementById("order-count").textContent = open.length;
  document.getElementById("alert-count").textContent = late.length;

  const alerts = Object.values(state.alerts).sort(
    (a, b) => (a.state === "raised" ? 0 : 1) - (b.state === "raised" ? 0 : 1) || b.at - a.at);
  const alertList = document.getElementById("alerts");
  alertList.replaceChildren(...alerts.slice(0, 60).map((a) => el("li",
    { class: `alert ${a.kind} ${a.state}`, "data-key": a.key, onclick: () => focusOrder(a.work_order) },
    el("b", {}, a.kind === "late" ? (a.state === "raised" ? "Late" : "Back on time") : "Conflict"),
    ` ${a.work_order} · ${a.technician} · ${hhmm(a.at)}`,
    el("div", { class: "msg" }, a.kind === "late"
      ? `${a.message} (window ${hhmm(a.window[0])}–${hhmm(a.window[1])}, P(late) ${Math.round(a.probability * 100)}%)`
        + (a.suggested_technician ? ` · swap: ${a.suggested_technician}` : "")
      : a.message))));
  if (!alerts.length) alertList.replaceChildren(el("li", { class: "empty" }, "No alerts."));

  const rank = { en_route: 0, on_site: 1, available: 2, off_shift: 3 };
  techs.sort((a, b) => rank[a.status] - rank[b.status] || a.id.localeCompare(b.id));
  document.getElementById("technicians").replaceChildren(...techs.map((t) => {
    const job = t.job ? state.orders[t.job] : null;
    const next = t.queue.length ? state.orders[t.queue[0]] : null;
    const detail = job ? `${job.id} · ${windowText(job)}`
      : next ? `next ${next.id} · ${windowText(next)}` : "";
    return el("li", {
      class: `tech ${t.status}${state.selected === t.id ? " selected" : ""}`,
      "data-id": t.id, onclick: () => select(t.id),
    },
    el("i", { class: `dot ${t.status}` }),
    el("b", {}, t.name || t.id), ` ${t.id} · ${t.status.replace("_", " ")}`,
    el("div", { class: "msg" }, detail));
  }));
}

function select(id) {
  state.selected = state.selected === id ? null : id;
  const p = state.positions[id];
  if (p && state.selected) {
    map.view.cx = map.x(p[1]);
    map.view.cy = map.y(p[0]);
  }
  map.dirty = true;
  renderPanels();
}

function focusOrder(id) {
  const o = state.orders[id];
  if (!o) return;
  map.view.cx = map.x(o.site[1]);
  map.view.cy = map.y(o.site[0]);
  map.view.scale = Math.max(map.view.scale, map.baseScale * 4);
  map.dirty = true;
}

function drawOverlay(ctx) {
  const late = new Set(Object.values(state.alerts)
    .filter((a) => a.kind === "late" && a.state === "raised").map((a) => a.work_order));
  // Job sites first, then the lines from technicians en route to their site, then vans.
  for (const o of Object.values(state.orders)) {
    const [x, y] = map.toScreen(o.site[0], o.site[1]);
    ctx.fillStyle = ORDER_COLOUR[o.status] || "#888";
    ctx.strokeStyle = late.has(o.id) ? "#d62828" : "#fff";
    ctx.lineWidth = late.has(o.id) ? 3 : 1.5;
    ctx.fillRect(x - 4, y - 4, 8, 8);
    ctx.strokeRect(x - 4, y - 4, 8, 8);
  }
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = 1.5;
  for (const [id, t] of Object.entries(state.technicians)) {
    const p = state.positions[id];
    const o = t.job && state.orders[t.job];
    if (!p || !o || t.status !== "en_route") continue;
    const [x0, y0] = map.toScreen(p[0], p[1]);
    const [x1, y1] = map.toScreen(o.site[0], o.site[1]);
    ctx.strokeStyle = "rgba(23,105,224,0.6)";
    ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.font = "11px system-ui, sans-serif";
  let drawn = 0;
  for (const [id, p] of Object.entries(state.positions)) {
    const t = state.technicians[id];
    if (!p || !t) continue;
    const [x, y] = map.toScreen(p[0], p[1]);
    const selected = state.selected === id;
    ctx.beginPath();
    ctx.arc(x, y, selected ? 9 : 7, 0, 2 * Math.PI);
    ctx.fillStyle = STATUS_COLOUR[t.status] || "#555";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = selected ? "#000" : "#fff";
    ctx.stroke();
    if (p[2] !== null && p[3] !== null && p[3] > 1) {
      const a = (p[2] * Math.PI) / 180;
      ctx.beginPath();
      ctx.moveTo(x + Math.sin(a) * 7, y - Math.cos(a) * 7);
      ctx.lineTo(x + Math.sin(a) * 13, y - Math.cos(a) * 13);
      ctx.stroke();
    }
    ctx.fillStyle = "#222";
    ctx.fillText(t.name ? t.name.split(" ")[0] : id, x + 10, y - 8);
    drawn += 1;
  }
  state.drawn = drawn;
}

// Hover: what is under the pointer.
const tip = document.getElementById("tip");
map.canvas.addEventListener("mousemove", (e) => {
  const rect = map.canvas.getBoundingClientRect();
  const mx = e.clientX - rect.left, my = e.clientY - rect.top;
  let best = null, bestD = 144;
  for (const [id, p] of Object.entries(state.positions)) {
    const [x, y] = map.toScreen(p[0], p[1]);
    const d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bestD) { best = ["tech", id]; bestD = d; }
  }
  for (const o of Object.values(state.orders)) {
    const [x, y] = map.toScreen(o.site[0], o.site[1]);
    const d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bestD) { best = ["order", o.id]; bestD = d; }
  }
  if (!best) { tip.hidden = true; return; }
  let text;
  if (best[0] === "tech") {
    const t = state.technicians[best[1]], p = state.positions[best[1]];
    const job = t.job ? state.orders[t.job] : null;
    text = `${t.name} (${t.id}) · ${t.status.replace("_", " ")} · fix ${hhmm(p[4])}`
      + (job ? `\n${job.id}: ${windowText(job)}` : "");
  } else {
    const o = state.orders[best[1]];
    text = `${o.id} · ${o.job_type} · ${o.status.replace("_", " ")}\n${windowText(o)}`
      + (o.technician ? `\n${o.technician}` : "") + (o.late ? `\n⚠ ${o.late.message}` : "");
  }
  tip.textContent = text;
  tip.style.left = `${mx + 14}px`;
  tip.style.top = `${my + 14}px`;
  tip.hidden = false;
});
map.canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
