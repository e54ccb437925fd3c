// History charts (team.md): a robot's telemetry history, one small canvas line chart per metric, with its update
// events (install, success, failure, roll-back, with the version) as vertical markers, so "it got slower after
// 2.4.0" shows at a glance; and a rollout's guard metrics, updated robots against not-yet-updated ones, with the
// guard's limit. Drawn here on <canvas> (no chart library: a few lines and labels do not need one).
//
// Data: GET /api/devices/{id}/timeline (metric names and update events), GET /api/devices/{id}/history?metric=
// (points, 1-minute buckets for a day), GET /api/rollouts/{id}/guards/history. Live: a robot's reports (`report`)
// add markers at once, the polls that send an event (`device_updated`: a fact changed or it moved) append their
// numbers, and the charts are fetched again every minute; a rollout's chart is fetched again (at most every few
// seconds) when the rollout or one of its robots reports.
//
// For tests and screen readers: each chart's canvas carries `data-metric`, `data-points` and `data-markers`; the
// container carries `data-charts` and `data-markers` (totals).

const MAX_CHARTS = 12; // metrics charted per robot (the rest are listed by name)
const HEIGHT = 150;
const PAD = { left: 56, right: 12, top: 12, bottom: 22 };
const EVENT_STATUSES = new Set(["installing", "success", "failure", "rolled_back"]);
const FIXED = ["battery_percent", "cpu_percent", "memory_used_bytes", "memory_total_bytes", "disk_used_bytes",
  "disk_total_bytes", "uptime_secs"];
const REFETCH_MS = 3000; // a rollout's guard chart is fetched again at most this often
const RELOAD_MS = 60000; // a robot's charts are fetched again this often (a poll that changes no fact sends no event)

/** Tears down what a previous call left on a container (event handlers, timers). */
const teardown = new WeakMap();

function stop(container) {
  const fn = teardown.get(container);
  if (fn) fn();
  teardown.delete(container);
}

// ---------- colours (the page's CSS variables, so the charts follow the theme) ----------

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

function palette() {
  return {
    ink: cssVar("--ink", "#1d2733"),
    muted: cssVar("--muted", "#5d6b7a"),
    line: cssVar("--line", "#dde3ea"),
    accent: cssVar("--accent", "#1f5fbf"),
    ok: cssVar("--ok", "#1e7b45"),
    bad: cssVar("--bad", "#b42318"),
    warn: cssVar("--warn", "#9a5b00"),
    info: cssVar("--info", "#1f5fbf"),
  };
}

function statusColour(p, status) {
  return { success: p.ok, failure: p.bad, rolled_back: p.warn, installing: p.info }[status] || p.muted;
}

// ---------- formatting ----------

function valueText(metric, v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (/_bytes$/.test(metric)) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let n = Math.abs(v);
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${(Math.sign(v) * n).toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  const a = Math.abs(v);
  const text = a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
  return /_percent$/.test(metric) ? `${text} %` : text;
}

function clock(t, span) {
  const d = new Date(t * 1000);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  if (span > 2 * 86400) return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
  if (span < 600) return `${hm}:${String(d.getSeconds()).padStart(2, "0")}`;
  return hm;
}

/** Round tick step (seconds) giving about `n` ticks over `span`. */
function timeStep(span, n) {
  const steps = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
  return steps.find((s) => span / s <= n) || steps[steps.length - 1];
}

// ---------- drawing ----------

/**
 * Draws a chart on `canvas`: `series` [{points: [[t, v]], colour, dash, width, band: [[t, lo, hi]]}] over the time
 * span [t0, t1], `markers` [{t, label, colour}], labels formatted for `metric`. Sized to the canvas's CSS width.
 */
function draw(canvas, { t0, t1, series, markers, metric }) {
  const p = palette();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(240, Math.round(canvas.clientWidth || canvas.parentNode.clientWidth || 480));
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(HEIGHT * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, HEIGHT);
  g.font = "11px system-ui, sans-serif";

  const values = [];
  for (const s of series) {
    for (const [, v] of s.points) if (Number.isFinite(v)) values.push(v);
    for (const [, lo, hi] of s.band || []) values.push(lo, hi);
  }
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (hi === lo) {
    const pad = Math.abs(hi) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  } else {
    const pad = (hi - lo) * 0.08;
    lo -= pad;
    hi += pad;
  }
  const span = Math.max(1, t1 - t0);
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - t0) / span) * plotW;
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * plotH;

  // Axes and grid: three value lines, round time ticks.
  g.strokeStyle = p.line;
  g.fillStyle = p.muted;
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let i = 0; i <= 2; i++) {
    const v = lo + ((hi - lo) * i) / 2;
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath();
    g.moveTo(PAD.left, yy);
    g.lineTo(width - PAD.right, yy);
    g.stroke();
    g.fillText(valueText(metric, v), PAD.left - 4, yy);
  }
  g.textAlign = "center";
  g.textBaseline = "top";
  const step = timeStep(span, Math.max(2, Math.floor(plotW / 90)));
  const offset = new Date().getTimezoneOffset() * 60;
  for (let t = Math.ceil((t0 - offset) / step) * step + offset; t <= t1; t += step) {
    const xx = Math.round(x(t)) + 0.5;
    g.beginPath();
    g.moveTo(xx, PAD.top + plotH);
    g.lineTo(xx, PAD.top + plotH + 4);
    g.stroke();
    g.fillText(clock(t, span), xx, PAD.top + plotH + 6);
  }

  // Update markers under the lines, labelled with the version.
  g.save();
  g.beginPath();
  g.rect(PAD.left, 0, plotW, HEIGHT);
  g.clip();
  g.textBaseline = "top";
  const rows = []; // per label row, the right end of the last label placed in it
  for (const m of [...markers].sort((a, b) => a.t - b.t)) {
    if (m.t < t0 || m.t > t1) continue;
    const xx = Math.round(x(m.t)) + 0.5;
    g.strokeStyle = m.colour;
    g.setLineDash([4, 3]);
    g.beginPath();
    g.moveTo(xx, PAD.top);
    g.lineTo(xx, PAD.top + plotH);
    g.stroke();
    g.setLineDash([]);
    // The label right of its line (left of it near the right edge), on the first row where it does not
    // overlap the previous one.
    const w = g.measureText(m.label).width;
    const left = xx + 3 + w > width - PAD.right ? xx - 3 - w : xx + 3;
    let row = rows.findIndex((end) => end < left);
    if (row < 0) row = rows.length < 3 ? rows.length : rows.length - 1;
    rows[row] = left + w + 4;
    g.fillStyle = m.colour;
    g.textAlign = "left";
    g.fillText(m.label, left, PAD.top + row * 12);
  }

  // Bands (min-max) and lines (a gap where buckets are missing for more than a few widths).
  for (const s of series) {
    if (s.band && s.band.length > 1) {
      g.fillStyle = s.colour;
      g.globalAlpha = 0.12;
      g.beginPath();
      s.band.forEach(([t, , h], i) => (i ? g.lineTo(x(t), y(h)) : g.moveTo(x(t), y(h))));
      for (let i = s.band.length - 1; i >= 0; i--) g.lineTo(x(s.band[i][0]), y(s.band[i][1]));
      g.closePath();
      g.fill();
      g.globalAlpha = 1;
    }
    g.strokeStyle = s.colour;
    g.lineWidth = s.width || 1.75;
    g.setLineDash(s.dash || []);
    g.beginPath();
    let prev = null;
    const gap = Math.max(180, span / 60);
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) {
        prev = null;
        continue;
      }
      if (prev === null || t - prev > gap) g.moveTo(x(t), y(v));
      else g.lineTo(x(t), y(v));
      prev = t;
    }
    g.stroke();
    if (s.points.length === 1) {
      const [[t, v]] = s.points;
      g.fillStyle = s.colour;
      g.fillRect(x(t) - 2, y(v) - 2, 4, 4);
    }
    g.setLineDash([]);
  }
  g.restore();
  if (!series.some((s) => s.points.length)) {
    g.fillStyle = p.muted;
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.fillText("no data in this span", PAD.left + plotW / 2, PAD.top + plotH / 2);
  }
}

function chartBox(ctx, title, metric) {
  const canvas = ctx.el("canvas", {
    class: "chart", "data-metric": metric, "data-points": "0", "data-markers": "0", role: "img",
    "aria-label": title, style: { width: "100%", height: `${HEIGHT}px`, display: "block" },
  });
  const caption = ctx.el("span", { class: "muted chart-last" });
  const box = ctx.el("figure", { class: "chart-box", style: { margin: "0 0 10px 0" } },
    ctx.el("figcaption", { class: "chart-title" }, ctx.el("strong", {}, title), " ", caption),
    canvas);
  return { box, canvas, caption };
}

// ---------- a robot ----------

function markerOf(p, e) {
  const label = `${e.version || "?"}${e.status === "success" ? "" : ` ${e.status.replace("_", " ")}`}`;
  return { t: e.at, label, colour: statusColour(p, e.status) };
}

/** Charts of robot `deviceId`'s telemetry history in `container`, live. Calling it again replaces them. */
export function robotCharts(ctx, container, deviceId) {
  stop(container);
  const { el } = ctx;
  ctx.clear(container);
  const status = el("p", { class: "muted" }, "Loading history…");
  const grid = el("div", { class: "chart-grid", "data-device-id": deviceId, "data-charts": "0", "data-markers": "0" });
  const others = el("p", { class: "muted", hidden: true });
  container.append(el("h3", {}, "History ", el("span", { class: "muted" }, "(last 24 h)")), status, grid, others);

  const state = { since: 0, events: [], charts: new Map(), alive: true, frame: 0 };
  const render = () => {
    state.frame = 0;
    if (!state.alive || !container.isConnected) return;
    const p = palette();
    const now = Date.now() / 1000;
    const markers = state.events.map((e) => markerOf(p, e));
    // One time axis for every chart: from the oldest point or event in the span (a robot with an hour of
    // history gets an hour wide axis, not a day), a little margin before it.
    const starts = [...state.charts.values()].filter((c) => c.points.length).map((c) => c.points[0].at)
      .concat(state.events.map((e) => e.at).filter((t) => t >= state.since));
    const t0 = starts.length ? Math.max(state.since, Math.min(...starts) - 300) : state.since;
    let shown = 0;
    for (const [metric, c] of state.charts) {
      draw(c.canvas, {
        t0, t1: now, metric, markers,
        series: [{
          points: c.points.map((q) => [q.at + 30, q.mean]),
          band: c.points.map((q) => [q.at + 30, q.min, q.max]),
          colour: p.accent,
        }],
      });
      const inSpan = markers.filter((m) => m.t >= state.since && m.t <= now).length;
      shown = inSpan;
      c.canvas.setAttribute("data-points", String(c.points.length));
      c.canvas.setAttribute("data-markers", String(inSpan));
      const last = c.points[c.points.length - 1];
      c.caption.textContent = last ? `last ${valueText(metric, last.mean)}` : "";
    }
    grid.setAttribute("data-charts", String(state.charts.size));
    grid.setAttribute("data-markers", String(shown));
  };
  const redraw = () => {
    if (!state.frame) state.frame = requestAnimationFrame(render);
  };

  async function load() {
    try {
      const id = encodeURIComponent(deviceId);
      const timeline = await ctx.api.get(`/api/devices/${id}/timeline`);
      if (!state.alive) return;
      state.since = timeline.since;
      state.events = timeline.events;
      const metrics = timeline.metrics.slice(0, MAX_CHARTS);
      const histories = await Promise.all(metrics.map((m) =>
        ctx.api.get(`/api/devices/${id}/history?metric=${encodeURIComponent(m)}&since=${timeline.since}`)));
      if (!state.alive) return;
      ctx.clear(grid);
      state.charts.clear();
      histories.forEach((h, i) => {
        const c = chartBox(ctx, metrics[i], metrics[i]);
        state.charts.set(metrics[i], { ...c, points: h.points });
        grid.append(c.box);
      });
      const rest = timeline.metrics.slice(MAX_CHARTS);
      others.hidden = !rest.length;
      others.textContent = rest.length ? `Also recorded: ${rest.join(", ")}` : "";
      status.textContent = metrics.length ? "" : "No telemetry history for this robot yet.";
      status.hidden = metrics.length > 0;
      render();
    } catch (e) {
      status.hidden = false;
      status.textContent = `Could not load the history: ${e.message}`;
    }
  }

  // A poll's numbers join the open minute's point (a mean of what was seen), as the server's buckets do.
  const offPoll = ctx.on("device_updated", (d) => {
    if (d.device_id !== deviceId || !d.telemetry) return;
    const at = Math.floor((d.last_seen || Date.now() / 1000) / 60) * 60;
    for (const [metric, c] of state.charts) {
      const v = FIXED.includes(metric) ? d.telemetry[metric] : (d.telemetry.metrics || {})[metric];
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      const last = c.points[c.points.length - 1];
      if (last && last.at === at) {
        last.count += 1;
        last.mean += (v - last.mean) / last.count;
        last.min = Math.min(last.min, v);
        last.max = Math.max(last.max, v);
      } else if (!last || last.at < at) {
        c.points.push({ at, count: 1, min: v, max: v, mean: v });
      }
    }
    redraw();
  });
  const offReport = ctx.on("report", ({ device_id: id, report }) => {
    if (id !== deviceId || !EVENT_STATUSES.has(report.status)) return;
    state.events.push({ at: report.received_at, status: report.status, version: report.version, rollout_id: report.rollout_id });
    redraw();
  });
  const offResync = ctx.on("resync", load);
  const onResize = () => redraw();
  window.addEventListener("resize", onResize);
  const reload = setInterval(() => {
    if (container.isConnected) load();
    else stop(container); // the view was rebuilt without it
  }, RELOAD_MS);
  teardown.set(container, () => {
    state.alive = false;
    clearInterval(reload);
    offPoll();
    offReport();
    offResync();
    window.removeEventListener("resize", onResize);
  });
  load();
}

// ---------- a rollout's guards ----------

/** Charts of rollout `rolloutId`'s guard metrics in `container`, updated against not-yet-updated robots, live. */
export function rolloutGuards(ctx, container, rolloutId) {
  stop(container);
  const { el } = ctx;
  ctx.clear(container);
  const status = el("p", { class: "muted" }, "Loading guard history…");
  const grid = el("div", { class: "chart-grid", "data-rollout-id": String(rolloutId), "data-charts": "0" });
  const p0 = palette();
  const legend = el("p", { class: "legend chart-legend" },
    swatch(el, p0.bad, "updated"), " ", swatch(el, p0.muted, "not yet updated"), " ", swatch(el, p0.warn, "limit"));
  container.append(el("h3", {}, "Guards ", el("span", { class: "muted" }, "(updated against not yet updated)")),
    status, legend, grid);

  const state = { alive: true, timer: 0, last: 0 };
  async function load() {
    state.timer = 0;
    state.last = Date.now();
    try {
      const h = await ctx.api.get(`/api/rollouts/${encodeURIComponent(rolloutId)}/guards/history`);
      if (!state.alive) return;
      ctx.clear(grid);
      const p = palette();
      const now = Date.now() / 1000;
      for (const s of h.guards) {
        const c = chartBox(ctx, s.text, s.rule.metric);
        grid.append(c.box);
        const pick = (k) => s.points.filter((q) => q[k] !== null && q[k] !== undefined).map((q) => [q.at + 30, q[k]]);
        draw(c.canvas, {
          t0: h.since, t1: now, metric: s.rule.metric, markers: [],
          series: [
            { points: pick("baseline"), colour: p.muted },
            { points: pick("limit"), colour: p.warn, dash: [6, 4], width: 1.25 },
            { points: pick("updated"), colour: p.bad, width: 2 },
          ],
        });
        c.canvas.setAttribute("data-points", String(s.points.length));
        const last = s.points[s.points.length - 1];
        c.caption.textContent = last
          ? `updated ${valueText(s.rule.metric, last.updated)} (${last.updated_robots} robots) · not yet ${valueText(s.rule.metric, last.baseline)} (${last.baseline_robots})`
          : s.rule.metric === "reboots" ? "boots are not kept as history" : "no values yet";
      }
      grid.setAttribute("data-charts", String(h.guards.length));
      status.hidden = h.guards.length > 0;
      legend.hidden = !h.guards.length;
      status.textContent = h.guards.length ? "" : "This rollout has no guards.";
    } catch (e) {
      status.hidden = false;
      status.textContent = `Could not load the guard history: ${e.message}`;
    }
  }
  const soon = () => {
    if (!state.alive || state.timer) return;
    state.timer = setTimeout(load, Math.max(0, REFETCH_MS - (Date.now() - state.last)));
  };
  const offRollout = ctx.on("rollout_updated", (r) => {
    if (String(r.rollout_id) === String(rolloutId)) soon();
  });
  const offReport = ctx.on("report", ({ report }) => {
    if (String(report.rollout_id) === String(rolloutId)) soon();
  });
  const offResync = ctx.on("resync", load);
  teardown.set(container, () => {
    state.alive = false;
    clearTimeout(state.timer);
    offRollout();
    offReport();
    offResync();
  });
  load();
}

function swatch(el, colour, text) {
  return el("span", {},
    el("span", { class: "swatch", style: { background: colour, display: "inline-block", width: "10px", height: "10px" } }),
    ` ${text}`);
}
