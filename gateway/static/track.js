// A customer's page for one visit: the one-line status, the technician's first name, the
// windows, a delay notice, and the van on the map while it is on the way to this job.
"use strict";

const workOrder = decodeURIComponent(location.pathname.split("/").pop());
const token = new URLSearchParams(location.search).get("token") || "";
const visit = { doc: null, trail: [] };
window.fieldstream = visit; // read by the browser test
let hhmm = makeClock("UTC");
document.getElementById("wo").textContent = workOrder;

const map = new RoadMap(document.getElementById("map"), (ctx) => {
  const doc = visit.doc;
  if (!doc || !doc.site) return;
  const [sx, sy] = map.toScreen(doc.site[0], doc.site[1]);
  ctx.fillStyle = "#d62828";
  ctx.beginPath();
  ctx.arc(sx, sy - 10, 7, Math.PI, 0);
  ctx.lineTo(sx, sy);
  ctx.closePath();
  ctx.fill();
  if (doc.position) {
    ctx.strokeStyle = "rgba(23,105,224,0.5)";
    ctx.lineWidth = 3;
    ctx.beginPath();
    visit.trail.forEach(([lat, lon], i) => {
      const [x, y] = map.toScreen(lat, lon);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    const [x, y] = map.toScreen(doc.position.lat, doc.position.lon);
    ctx.beginPath();
    ctx.arc(x, y, 8, 0, 2 * Math.PI);
    ctx.fillStyle = "#1769e0";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
});

function frame(doc) {
  // Keep the site and the van in view.
  if (!map.lines.length || !doc.site) return;
  const pts = [[doc.site[0], doc.site[1]]];
  if (doc.position) pts.push([doc.position.lat, doc.position.lon]);
  const xs = pts.map((p) => map.x(p[1])), ys = pts.map((p) => map.y(p[0]));
  const span = 0.004;
  map.fit([Math.min(...xs) - span, Math.min(...ys) - span, Math.max(...xs) + span, Math.max(...ys) + span], 0.1);
}

function show(doc) {
  visit.doc = doc;
  hhmm = makeClock(doc.timezone);
  if (doc.position) {
    const last = visit.trail[visit.trail.length - 1];
    if (!last || last[0] !== doc.position.lat || last[1] !== doc.position.lon) {
      visit.trail.push([doc.position.lat, doc.position.lon]);
      if (visit.trail.length > 200) visit.trail.shift();
    }
  } else {
    visit.trail = [];
  }
  document.getElementById("headline").textContent = doc.headline;
  document.getElementById("tech").textContent = doc.technician ? doc.technician.first_name : "–";
  document.getElementById("promised").textContent = doc.promised
    ? `${hhmm(doc.promised[0])}–${hhmm(doc.promised[1])}` : "–";
  document.getElementById("expected").textContent = doc.expected
    ? `${hhmm(doc.expected[0])}–${hhmm(doc.expected[1])}` : "–";
  const delay = document.getElementById("delay");
  delay.hidden = !doc.delay;
  delay.textContent = doc.delay ? doc.delay.message : "";
  document.body.dataset.status = doc.status || "unknown";
  map.ready.then(() => frame(doc));
  map.dirty = true;
}

visit.feed = new Feed(`/ws/track/${encodeURIComponent(workOrder)}`, { token }, {
  onSnapshot: show,
  onDelta: show,
  onStatus(kind, text) {
    const node = document.getElementById("conn");
    node.className = `conn ${kind}`;
    node.textContent = kind === "live" ? "Live: this page updates by itself." : text;
  },
});
