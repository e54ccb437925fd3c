// The fleet table (view `fleet`): one page of `GET /api/devices?page=...`, filtered and sorted on the server
// (10,000 robots never reach the browser at once). Under `#/rollout/<id>` it lists that rollout's robots.
//
// Live: `device_updated` redraws a row on the current page at once (a report reaches the screen in well
// under a second); anything that can move rows between pages (a new robot, a deletion, a changed sort value)
// refreshes the page and the fleet's counts, at most once per REFRESH_MS.
//
// Health comes from the server (the rule in ota-server's device_health.rs: failures and roll-backs among the
// last outcome reports, progress reports not counted).

const REFRESH_MS = 1000;
const OFF_PAGE_MS = 5000; // a robot off this page changed: only the counts (and maybe its place) are stale
const PAGE_SIZES = [50, 100, 500];

/** Columns: [sort key, header, cell class]. Every column sorts on the server. */
const COLUMNS = [
  ["device", "Device", "col-device"],
  ["compatible", "Compatible", "col-compatible"],
  ["tags", "Tags", "col-tags"],
  ["version", "Version", "col-version"],
  ["slot", "Slot", "col-slot"],
  ["last_seen", "Last seen", "col-seen"],
  ["status", "Last status", "col-status"],
  ["battery", "Battery", "num col-battery"],
  ["health", "Health", "col-health"],
  ["maintenance", "Maint.", "num col-maintenance"],
];

/** Devices seen lately by id (the current page, and what robot.js loaded). */
export const devices = new Map();

/** The health rule's verdict for display: {level, text}. */
export function health(d) {
  const h = d.health;
  if (!h || h.level === "ok") return { level: "ok", text: "ok" };
  if (h.level === "bad") return { level: "bad", text: `failing (${h.failures + h.rollbacks}/${h.outcomes})` };
  return { level: "warn", text: "last failed" };
}

let ctx;
const query = { page: 1, per_page: 50, sort: "device", order: "asc", q: "", status: "", rollout: null };
const rows = new Map(); // device_id -> <tr> on the current page
let selected = null;
let pending = []; // robots waiting for an operator's admission (admins only)
let last = null; // the last page answer
let refreshTimer = null;
let lastRefresh = 0;
let loading = null;

export function mount(c) {
  ctx = c;
  buildHead();
  ctx.on("resync", load);
  ctx.on("device_updated", (d) => {
    const before = devices.get(d.device_id);
    devices.set(d.device_id, d);
    const row = rows.get(d.device_id);
    if (row) fillRow(row, d);
    // A new robot, or one whose sort value, filter match or health may have changed: refresh (throttled).
    if (!before) scheduleRefresh(REFRESH_MS);
    else if (!row) scheduleRefresh(OFF_PAGE_MS);
    else if (sortValueChanged(before, d) || health(before).level !== health(d).level) scheduleRefresh(REFRESH_MS);
  });
  ctx.on("report", ({ device_id: id, report }) => {
    if (["failure", "rolled_back", "success"].includes(report.status)) {
      const msg = report.error || report.reason;
      ctx.announce(`${id}: ${ctx.fmt.STATUS_LABEL[report.status]}${report.rollout_id ? ` (rollout ${report.rollout_id})` : ""}${msg ? ` – ${msg}` : ""}`);
    }
  });
  ctx.on("device_deleted", ({ device_id: id }) => {
    devices.delete(id);
    scheduleRefresh(REFRESH_MS);
  });
  ctx.on("route", (route) => {
    selected = route.name === "robot" ? route.id : null;
    for (const [rid, row] of rows) row.classList.toggle("selected", rid === selected);
    const rollout = route.name === "rollout" ? Number(route.id) : null;
    if (rollout !== query.rollout && route.name !== "robot") {
      query.rollout = rollout;
      query.page = 1;
      load();
    }
  });
  let timer = null;
  document.getElementById("filter").addEventListener("input", (ev) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      query.q = ev.target.value.trim();
      query.page = 1;
      load();
    }, 200);
  });
  document.getElementById("status-filter").addEventListener("change", (ev) => {
    query.status = ev.target.value;
    query.page = 1;
    load();
  });
  // Relative times age in place.
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.col-seen")) {
      const ts = cell.getAttribute("data-ts");
      cell.textContent = ctx.fmt.ago(ts === "" ? null : Number(ts));
    }
  }, 5000);
}

function sortValueChanged(a, b) {
  if (query.sort === "device") return false;
  const pick = { version: "current_version", last_seen: "last_seen", slot: "booted_slot", compatible: "compatible" }[query.sort];
  if (pick) return a[pick] !== b[pick];
  return true; // status, battery, tags, health, maintenance: cheap to refresh
}

/** Reloads the page at most once per `every` ms (a sooner request shortens a pending later one). */
function scheduleRefresh(every) {
  const due = Math.max(Date.now(), lastRefresh + every);
  if (refreshTimer && refreshTimer.due <= due) return;
  if (refreshTimer) clearTimeout(refreshTimer.id);
  refreshTimer = {
    due,
    id: setTimeout(() => {
      refreshTimer = null;
      load().catch((e) => console.warn(e));
    }, due - Date.now()),
  };
}

function url() {
  const p = new URLSearchParams({ page: query.page, per_page: query.per_page, sort: query.sort, order: query.order });
  if (query.q) p.set("q", query.q);
  if (query.status) p.set("status", query.status);
  if (query.rollout !== null) p.set("rollout", query.rollout);
  return `/api/devices?${p}`;
}

/** Loads the current page (the newest request wins). */
async function load() {
  lastRefresh = Date.now();
  const mine = {};
  loading = mine;
  const t0 = performance.now();
  let page;
  try {
    page = await ctx.api.get(url());
  } catch (e) {
    if (loading === mine) ctx.toast(`Could not load the fleet: ${e.message}`, "error");
    return;
  }
  if (loading !== mine) return;
  last = page;
  for (const d of page.devices) devices.set(d.device_id, d);
  render(page);
  window.__fleetRenderedMs = performance.now() - t0; // read by the browser test
  if (ctx.can("admin")) {
    ctx.api.get("/api/admission").then((ids) => {
      pending = ids.filter((i) => i.admission === "pending");
      summary();
    }).catch(() => {});
  }
}

function buildHead() {
  const { el } = ctx;
  const tr = document.getElementById("device-head");
  ctx.clear(tr);
  for (const [key, label, cls] of COLUMNS) {
    const th = el("th", { scope: "col", class: `sortable ${cls}`, "data-sort": key },
      el("button", { type: "button", onclick: () => sortBy(key) }, label));
    tr.append(th);
  }
  const sizes = document.getElementById("page-size");
  for (const n of PAGE_SIZES) sizes.append(el("option", { value: n, selected: n === query.per_page }, `${n} per page`));
  sizes.addEventListener("change", () => {
    query.per_page = Number(sizes.value);
    query.page = 1;
    load();
  });
  document.getElementById("page-prev").addEventListener("click", () => turn(-1));
  document.getElementById("page-next").addEventListener("click", () => turn(1));
}

function sortBy(key) {
  if (query.sort === key) query.order = query.order === "asc" ? "desc" : "asc";
  else {
    query.sort = key;
    query.order = "asc";
  }
  query.page = 1;
  load();
}

function turn(delta) {
  const pages = Math.max(1, Math.ceil((last ? last.total : 0) / query.per_page));
  query.page = Math.min(pages, Math.max(1, query.page + delta));
  load();
}

function render(page) {
  for (const th of document.querySelectorAll("#device-head th")) {
    const key = th.getAttribute("data-sort");
    if (key === query.sort) th.setAttribute("aria-sort", query.order === "asc" ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  const body = document.getElementById("device-rows");
  const frag = document.createDocumentFragment();
  const keep = new Map();
  for (const d of page.devices) {
    const row = rows.get(d.device_id) || ctx.el("tr");
    fillRow(row, d);
    keep.set(d.device_id, row);
    frag.append(row);
  }
  ctx.clear(body);
  body.append(frag);
  rows.clear();
  for (const [k, v] of keep) rows.set(k, v);
  const pages = Math.max(1, Math.ceil(page.total / page.per_page));
  document.getElementById("page-info").textContent =
    `page ${page.page} of ${pages} · ${page.total} matching`;
  document.getElementById("page-prev").disabled = page.page <= 1;
  document.getElementById("page-next").disabled = page.page >= pages;
  document.getElementById("no-devices").hidden = page.fleet.devices > 0;
  const filtered = query.q || query.status || query.rollout !== null;
  document.getElementById("fleet-count").textContent =
    filtered ? `${page.total} of ${page.fleet.devices}` : `${page.fleet.devices} devices`;
  const chip = document.getElementById("fleet-scope");
  chip.hidden = query.rollout === null;
  chip.textContent = query.rollout === null ? "" : `robots of rollout #${query.rollout}`;
  document.getElementById("fleet-title").textContent = query.rollout === null ? "Fleet" : "Robots";
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
  const score = d.maintenance_score;
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
    el("td", { class: "num col-maintenance" }, score === null || score === undefined ? "–" : `${Math.round(score)}`),
  );
}

function summary() {
  if (!last) return;
  const c = last.fleet;
  ctx.emit("summary", { key: "devices", text: `${c.devices} devices` });
  ctx.emit("summary", {
    key: "health",
    text: `${c.failing} failing · ${c.last_failed} last failed` +
      (c.frozen ? ` · ${c.frozen} frozen (no fresh signed metadata; filter "frozen")` : "") +
      (pending.length
        ? ` · ${pending.length} waiting for admission (ota-server devices pending): ` +
          pending.slice(0, 5).map((i) => i.device_id).join(", ")
        : ""),
  });
}
