// The fleet table (view `fleet`), kept live from `device_updated`, `report` and `device_deleted` events.
//
// Health rule: a device is flagged "failing" when at least 2 of its last 5 reports are `failure` or
// `rolled_back`; "last failed" when only its latest status is.

const MAX_ROWS = 500; // rows rendered at once; the filter narrows large fleets
const HISTORY = 5; // reports considered by the health rule
const BAD_THRESHOLD = 2; // failures among them that flag a device
const BAD = new Set(["failure", "rolled_back"]);

/** Devices by id, and their report histories (newest first, possibly partial). */
export const devices = new Map();
export const history = new Map();

let ctx;
const rows = new Map(); // device_id -> <tr>
let pending = []; // robots waiting for an operator's admission
let scheduled = false;
let selected = null;

export function health(d) {
  const reports = history.get(d.device_id);
  if (reports && reports.length) {
    const bad = reports.slice(0, HISTORY).filter((r) => BAD.has(r.status)).length;
    if (bad >= BAD_THRESHOLD) return { level: "bad", text: `failing (${bad}/${Math.min(HISTORY, reports.length)})` };
  }
  if (d.last_status && BAD.has(d.last_status.status)) return { level: "warn", text: "last failed" };
  return { level: "ok", text: "ok" };
}

export function mount(c) {
  ctx = c;
  ctx.on("resync", load);
  ctx.on("device_updated", (d) => {
    const before = devices.get(d.device_id);
    devices.set(d.device_id, d);
    if (before) updateRow(d.device_id);
    else schedule();
  });
  ctx.on("report", ({ device_id: id, report }) => {
    const list = history.get(id) || [];
    if (!list.some((r) => r.report_id === report.report_id)) list.unshift(report);
    history.set(id, list.slice(0, 200));
    if (BAD.has(report.status) || report.status === "success") {
      const msg = report.error || report.reason;
      ctx.announce(`${id}: ${ctx.fmt.STATUS_LABEL[report.status]}${report.rollout_id ? ` (rollout ${report.rollout_id})` : ""}${msg ? ` – ${msg}` : ""}`);
    }
    updateRow(id);
  });
  ctx.on("device_deleted", ({ device_id: id }) => {
    devices.delete(id);
    history.delete(id);
    schedule();
  });
  ctx.on("route", (route) => {
    selected = route.name === "robot" ? route.id : null;
    for (const [rid, row] of rows) row.className = rid === selected ? "selected" : "";
  });
  let timer = null;
  document.getElementById("filter").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => render(), 120);
  });
  // Relative times age in place.
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.col-seen")) {
      const ts = cell.getAttribute("data-ts");
      cell.textContent = ctx.fmt.ago(ts === "" ? null : Number(ts));
    }
  }, 5000);
}

async function load() {
  const [list, identities] = await Promise.all([ctx.api.get("/api/devices"), ctx.api.get("/api/admission")]);
  pending = identities.filter((i) => i.admission === "pending");
  devices.clear();
  for (const d of list) devices.set(d.device_id, d);
  for (const id of history.keys()) if (!devices.has(id)) history.delete(id);
  render();
  // Histories for the devices whose last status is bad (bounded), so the health rule can look further back.
  const suspects = list.filter((d) => d.last_status && BAD.has(d.last_status.status)).slice(0, 200);
  fetchHistories(suspects.map((d) => d.device_id));
}

async function fetchHistories(ids) {
  const queue = ids.slice();
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try {
        const detail = await ctx.api.get(`/api/devices/${encodeURIComponent(id)}`);
        history.set(id, detail.reports);
        updateRow(id);
      } catch (e) {
        console.warn(e);
        return;
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

function matches(d, q) {
  if (!q) return true;
  const hay = [
    d.device_id, d.compatible, d.current_version, d.booted_slot,
    d.last_status && d.last_status.status, health(d).text,
    ...Object.entries(d.tags || {}).map(([k, v]) => `${k}=${v}`),
    ...Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`),
    d.group, d.waiting && "waiting", d.freeze_alarm && `frozen ${d.freeze_alarm.reason}`,
  ].filter(Boolean).join(" ").toLowerCase();
  return q.split(/\s+/).every((w) => hay.includes(w));
}

function render() {
  const q = document.getElementById("filter").value.trim().toLowerCase();
  const all = [...devices.values()];
  const shown = all.filter((d) => matches(d, q)).sort((a, b) => a.device_id.localeCompare(b.device_id));
  const body = document.getElementById("device-rows");
  const keep = new Map();
  const frag = document.createDocumentFragment();
  for (const d of shown.slice(0, MAX_ROWS)) {
    const row = rows.get(d.device_id) || ctx.el("tr");
    fillRow(row, d);
    keep.set(d.device_id, row);
    frag.append(row);
  }
  ctx.clear(body);
  body.append(frag);
  rows.clear();
  for (const [k, v] of keep) rows.set(k, v);
  document.getElementById("no-devices").hidden = all.length > 0;
  const more = document.getElementById("more-devices");
  more.hidden = shown.length <= MAX_ROWS;
  more.textContent = `Showing ${MAX_ROWS} of ${shown.length} matching devices; narrow the filter to see the rest.`;
  document.getElementById("fleet-count").textContent = q ? `${shown.length} of ${all.length}` : `${all.length} devices`;
  summary();
}

function updateRow(id) {
  const row = rows.get(id);
  const d = devices.get(id);
  if (row && d) fillRow(row, d);
  summary();
}

function fillRow(row, d) {
  const { el, fmt } = ctx;
  const t = d.telemetry || {};
  const h = health(d);
  const ls = d.last_status;
  row.setAttribute("data-device-id", d.device_id);
  row.setAttribute("data-status", ls ? ls.status : "");
  row.setAttribute("data-health", h.level);
  row.className = selected === d.device_id ? "selected" : "";
  ctx.clear(row);
  const open = el("button", {
    type: "button", class: "device-link", "aria-label": `Show history of ${d.device_id}`,
    onclick: () => ctx.go(`#/robot/${encodeURIComponent(d.device_id)}`),
  }, d.device_id);
  const slots = Object.entries(d.slots || {}).map(([s, v]) => `${s}: ${v}`).join(", ");
  const battery = t.battery_percent;
  row.append(
    el("th", { scope: "row", class: "col-device" }, open),
    el("td", { class: "col-compatible" }, d.compatible),
    el("td", { class: "col-tags" }, fmt.tagChips({ ...(d.tags || {}), ...(d.labels || {}) }),
      d.group ? el("div", { class: "muted small" }, `group ${d.group}`) : null),
    el("td", { class: "col-version" }, d.current_version || el("span", { class: "muted" }, "unknown")),
    el("td", { class: "col-slot", title: slots || null }, d.booted_slot || "–"),
    el("td", { class: "col-seen", "data-ts": d.last_seen ?? "", title: fmt.absolute(d.last_seen) }, fmt.ago(d.last_seen)),
    el("td", { class: "col-status", title: ls ? [ls.error, ls.reason, fmt.absolute(ls.at)].filter(Boolean).join(" · ") : null },
      ls ? fmt.statusBadge(ls.status, ls.rollout_id ? el("span", { class: "badge-extra" }, ` #${ls.rollout_id}`) : null)
        : el("span", { class: "muted" }, "–"),
      d.waiting ? el("div", { class: "reason small" }, `waiting before ${d.waiting.phase}: ${d.waiting.reason}`) : null),
    el("td", { class: `num col-battery${battery !== undefined && battery < 20 ? " low" : ""}` },
      battery === undefined || battery === null ? "–" : `${Math.round(battery)} %`),
    el("td", { class: "col-health" }, el("span", { class: `health h-${h.level}` }, h.level === "ok" ? "ok" : `⚠ ${h.text}`),
      d.freeze_alarm ? el("span", {
        class: "badge st-failure freeze",
        title: `freeze alarm (${d.freeze_alarm.reason}): no fresh signed timestamp for ${d.freeze_alarm.stale_secs} s of the robot's uptime; see docs/time-model.md`,
      }, `frozen: ${d.freeze_alarm.reason}`) : null),
  );
}

function summary() {
  let bad = 0, warn = 0, frozen = 0;
  for (const d of devices.values()) {
    if (d.freeze_alarm) frozen++;
    const h = health(d).level;
    if (h === "bad") bad++;
    else if (h === "warn") warn++;
  }
  ctx.emit("summary", { key: "devices", text: `${devices.size} devices` });
  ctx.emit("summary", {
    key: "health",
    text: `${bad} failing · ${warn} last failed` +
      (frozen ? ` · ${frozen} frozen (no fresh signed metadata; filter "frozen")` : "") +
      (pending.length
        ? ` · ${pending.length} waiting for admission (ota-server devices pending): ` +
          pending.slice(0, 5).map((i) => i.device_id).join(", ")
        : ""),
  });
}
