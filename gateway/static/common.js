// Shared by the dispatcher map and the customer page: the feed client (snapshot, deltas,
// resume with ?since=, heartbeats, reconnects) and a small canvas renderer of the streets.
"use strict";

// Close codes after which reconnecting cannot help (docs/websocket-protocol.md).
const FINAL_CODES = {
  4400: "The request was not understood.",
  4401: "This page needs a token: open the link you were given.",
  4402: "This link is not valid.",
  4403: "This link does not give access to this view.",
  4408: "This link has expired: ask for a new one.",
  1009: "A message was too large.",
};

class Feed {
  // path: "/ws/dispatch" or "/ws/track/<id>"; params: extra query parameters.
  // handlers: onSnapshot(data, msg), onDelta(data, msg), onStatus(state, text)
  constructor(path, params, handlers) {
    this.path = path;
    this.params = params;
    this.h = handlers;
    this.seq = null;
    this.epoch = null;
    this.lastFrame = 0;
    this.retry = 500;
    this.stats = { snapshots: 0, deltas: 0, heartbeats: 0, resumes: 0, reconnects: 0 };
    this.connect();
    setInterval(() => this.watchdog(), 5000);
  }

  url() {
    const q = new URLSearchParams(this.params);
    if (this.seq !== null) {
      q.set("since", String(this.seq));
      q.set("epoch", this.epoch);
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}?${q}`;
  }

  connect() {
    this.h.onStatus("connecting", "connecting…");
    const ws = (this.ws = new WebSocket(this.url()));
    ws.onmessage = (ev) => this.receive(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      if (FINAL_CODES[ev.code]) {
        this.h.onStatus("refused", `${FINAL_CODES[ev.code]} (${ev.code} ${ev.reason})`);
        return;
      }
      this.h.onStatus("connecting", "reconnecting…");
      this.stats.reconnects += 1;
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 15000);
    };
  }

  receive(msg) {
    this.lastFrame = Date.now();
    if (msg.type === "snapshot") {
      this.seq = msg.seq;
      this.epoch = msg.epoch;
      this.retry = 500;
      this.stats.snapshots += 1;
      this.h.onSnapshot(msg.data, msg);
      this.h.onStatus("live", "live");
    } else if (msg.type === "resume") {
      this.stats.resumes += 1;
      this.retry = 500;
      this.h.onStatus("live", "live");
    } else if (msg.type === "delta") {
      if (this.seq !== null && msg.seq !== this.seq + 1) {
        // A gap: never apply a delta on the wrong base; ask for a fresh snapshot.
        this.ws.send(JSON.stringify({ type: "resync" }));
        return;
      }
      this.seq = msg.seq;
      this.stats.deltas += 1;
      this.h.onDelta(msg.data, msg);
    } else if (msg.type === "heartbeat") {
      this.stats.heartbeats += 1;
      if (this.h.onHeartbeat) this.h.onHeartbeat(msg);
    }
  }

  watchdog() {
    // Heartbeats come at least every 15 s: a silent minute means a dead connection.
    if (this.ws && this.ws.readyState === WebSocket.OPEN && Date.now() - this.lastFrame > 60000) {
      this.ws.close();
    }
  }
}

function makeClock(timezone) {
  const fmt = new Intl.DateTimeFormat("en-GB", {
    hour: "2-digit", minute: "2-digit", hour12: false, timeZone: timezone || "UTC",
  });
  return (ms) => (ms === null || ms === undefined ? "–" : fmt.format(new Date(ms)));
}

// Road classes from the biggest to the smallest: [colour, width at zoom 1, min zoom shown].
const ROAD_STYLE = {
  motorway: ["#e3a15b", 3.2, 0], trunk: ["#e8b36a", 3.0, 0], primary: ["#f0c987", 2.6, 0],
  secondary: ["#f5dca8", 2.1, 0], tertiary: ["#ffffff", 1.7, 0],
  motorway_link: ["#e3a15b", 1.6, 0], trunk_link: ["#e8b36a", 1.6, 0],
  primary_link: ["#f0c987", 1.4, 0], secondary_link: ["#f5dca8", 1.3, 0],
  tertiary_link: ["#ffffff", 1.2, 0], unclassified: ["#ffffff", 1.1, 1.5],
  residential: ["#ffffff", 1.0, 2], living_street: ["#ffffff", 0.9, 3], road: ["#ffffff", 0.9, 2],
  service: ["#fbfbfb", 0.7, 4],
};

class RoadMap {
  // A canvas with the streets, pan (drag) and zoom (wheel); overlays draw in map coordinates.
  constructor(canvas, onDraw) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onDraw = onDraw;
    this.lines = [];
    this.dirty = true;
    this.view = null;
    this.ready = fetch("/roads.json").then((r) => r.json()).then((doc) => this.load(doc));
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.interact();
    const frame = () => {
      if (this.dirty) this.draw();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  load(doc) {
    const [minLat, minLon, maxLat, maxLon] = doc.bbox;
    this.lat0 = (minLat + maxLat) / 2;
    this.kx = Math.cos((this.lat0 * Math.PI) / 180);
    this.bounds = [this.x(minLon), this.y(maxLat), this.x(maxLon), this.y(minLat)];
    const order = Object.keys(ROAD_STYLE);
    this.lines = doc.lines.map((row) => {
      const cls = doc.classes[row[0]];
      let lat = row[1], lon = row[2];
      const pts = [this.x(lon / doc.scale), this.y(lat / doc.scale)];
      for (let i = 3; i < row.length; i += 2) {
        lat += row[i];
        lon += row[i + 1];
        pts.push(this.x(lon / doc.scale), this.y(lat / doc.scale));
      }
      return { cls, pts, rank: order.indexOf(cls) };
    });
    this.lines.sort((a, b) => b.rank - a.rank); // small roads first, big roads on top
    if (!this.view) this.fit(this.bounds);
    this.dirty = true;
  }

  // Equirectangular projection in degrees of longitude (x east, y south).
  x(lon) { return lon * this.kx; }
  y(lat) { return -lat; }

  fit([x0, y0, x1, y1], pad = 0.05) {
    const w = this.canvas.clientWidth || 800, h = this.canvas.clientHeight || 600;
    const dx = (x1 - x0) * (1 + 2 * pad) || 0.01, dy = (y1 - y0) * (1 + 2 * pad) || 0.01;
    const scale = Math.min(w / dx, h / dy);
    this.view = { scale, cx: (x0 + x1) / 2, cy: (y0 + y1) / 2 };
    this.baseScale = this.baseScale || scale;
    this.dirty = true;
  }

  toScreen(lat, lon) {
    const v = this.view;
    return [
      (this.x(lon) - v.cx) * v.scale + this.canvas.width / this.dpr / 2,
      (this.y(lat) - v.cy) * v.scale + this.canvas.height / this.dpr / 2,
    ];
  }

  resize() {
    this.dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(this.canvas.clientWidth * this.dpr);
    this.canvas.height = Math.round(this.canvas.clientHeight * this.dpr);
    this.dirty = true;
  }

  interact() {
    let drag = null;
    this.canvas.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; });
    window.addEventListener("mouseup", () => { drag = null; });
    window.addEventListener("mousemove", (e) => {
      if (!drag || !this.view) return;
      this.view.cx -= (e.clientX - drag[0]) / this.view.scale;
      this.view.cy -= (e.clientY - drag[1]) / this.view.scale;
      drag = [e.clientX, e.clientY];
      this.dirty = true;
    });
    this.canvas.addEventListener("wheel", (e) => {
      if (!this.view) return;
      e.preventDefault();
      const rect = this.canvas.getBoundingClientRect();
      const mx = e.clientX - rect.left - rect.width / 2, my = e.clientY - rect.top - rect.height / 2;
      const factor = Math.exp(-e.deltaY * 0.0015);
      const v = this.view;
      v.cx += mx / v.scale - mx / (v.scale * factor);
      v.cy += my / v.scale - my / (v.scale * factor);
      v.scale *= factor;
      this.dirty = true;
    }, { passive: false });
  }

  draw() {
    this.dirty = false;
    const ctx = this.ctx, dpr = this.dpr || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const w = this.canvas.width / dpr, h = this.canvas.height / dpr;
    ctx.fillStyle = "#e9e5dc";
    ctx.fillRect(0, 0, w, h);
    if (!this.view) return;
    const v = this.view, zoom = v.scale / (this.baseScale || v.scale);
    const ox = w / 2 - v.cx * v.scale, oy = h / 2 - v.cy * v.scale;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const pass of ["casing", "fill"]) {
      for (const line of this.lines) {
        const style = ROAD_STYLE[line.cls] || ROAD_STYLE.road;
        if (zoom < style[2]) continue;
        const width = style[1] * Math.max(0.6, Math.min(zoom, 6) ** 0.6);
        ctx.strokeStyle = pass === "casing" ? "#b9b2a4" : style[0];
        ctx.lineWidth = pass === "casing" ? width + 1.2 : width;
        ctx.beginPath();
        const p = line.pts;
        ctx.moveTo(p[0] * v.scale + ox, p[1] * v.scale + oy);
        for (let i = 2; i < p.length; i += 2) ctx.lineTo(p[i] * v.scale + ox, p[i + 1] * v.scale + oy);
        ctx.stroke();
      }
    }
    if (this.onDraw) this.onDraw(ctx, this);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}
