// One robot (view `robot`, route `#/robot/<id>`): its facts, its report history (newest first, live), and H's
// telemetry charts. A side panel beside the fleet on a wide screen, a full-screen sheet under 600 px.

import { devices, history as reports, health } from "./fleet.js";
import * as charts from "./charts.js";

let ctx;
let current = null; // device id shown
let parts = null; // the view's elements

export function mount(c) {
  ctx = c;
  ctx.on("route", (route) => {
    if (route.name === "robot") open(route.id);
    else close();
  });
  ctx.on("device_updated", (d) => {
    if (d.device_id === current) renderFacts(d);
  });
  ctx.on("report", ({ device_id: id }) => {
    if (id === current) renderReports(reports.get(id) || []);
  });
  ctx.on("device_deleted", ({ device_id: id }) => {
    if (id === current) ctx.go("#/");
  });
  ctx.on("resync", () => {
    if (current) open(current);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && current && !document.querySelector("dialog[open]")) ctx.back();
  });
}

function build() {
  const { el } = ctx;
  const node = ctx.view("robot");
  ctx.clear(node);
  parts = {
    title: el("h2", { id: "detail-title" }, "Device"),
    close: el("button", {
      id: "detail-close", type: "button", class: "link-button", "aria-label": "Close device history",
      onclick: () => ctx.back(),
    }, "← Back"),
    facts: el("dl", { id: "detail-facts", class: "facts" }),
    charts: el("div", { class: "robot-charts" }),
    loading: el("p", { id: "detail-loading", class: "muted", hidden: true }, "Loading…"),
    reports: el("tbody", { id: "report-rows" }),
    empty: el("p", { id: "no-reports", class: "empty", hidden: true }, "No reports from this device."),
  };
  node.append(
    el("div", { class: "card-head" }, parts.close, parts.title),
    parts.facts,
    parts.charts,
    el("h3", {}, "Reports ", el("span", { class: "muted" }, "(newest first)")),
    parts.loading,
    el("table", { class: "grid reports" },
      el("thead", {}, el("tr", {},
        el("th", { scope: "col" }, "Received"), el("th", { scope: "col" }, "Status"), el("th", { scope: "col" }, "Details"))),
      parts.reports),
    parts.empty,
  );
}

async function open(id) {
  const first = current !== id;
  current = id;
  const node = ctx.view("robot");
  if (first || !parts) build();
  node.hidden = false;
  document.body.classList.add("sheet-open");
  parts.title.textContent = id;
  const d = devices.get(id);
  if (d) renderFacts(d);
  if (reports.has(id)) renderReports(reports.get(id));
  parts.loading.hidden = false;
  if (first) {
    parts.close.focus();
    charts.robotCharts(ctx, parts.charts, id);
  }
  try {
    const detail = await ctx.api.get(`/api/devices/${encodeURIComponent(id)}`);
    if (current !== id) return;
    devices.set(id, detail.device);
    reports.set(id, detail.reports);
    renderFacts(detail.device);
    renderReports(detail.reports);
  } catch (e) {
    ctx.announce(`Could not load ${id}: ${e.message}`);
  } finally {
    if (current === id) parts.loading.hidden = true;
  }
}

function close() {
  const id = current;
  current = null;
  ctx.view("robot").hidden = true;
  document.body.classList.remove("sheet-open");
  const row = id && document.querySelector(`tr[data-device-id="${CSS.escape(id)}"] button`);
  if (row) row.focus();
}

function renderFacts(d) {
  const { el, fmt } = ctx;
  const t = d.telemetry || {};
  const dl = ctx.clear(parts.facts);
  const fact = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  fact("Compatible", d.compatible);
  fact("Version", d.current_version || "unknown");
  fact("Slots", Object.entries(d.slots || {}).map(([s, v]) => `${s}: ${v}${s === d.booted_slot ? " (booted)" : ""}`).join(", ") || "–");
  fact("Tags", fmt.tagChips(d.tags));
  fact("Last seen", d.last_seen ? `${fmt.ago(d.last_seen)} (${fmt.absolute(d.last_seen)})` : "never");
  fact("Enrolled", fmt.absolute(d.enrolled_at));
  fact("Health", health(d).text);
  if (t.battery_percent !== undefined) fact("Battery", `${Math.round(t.battery_percent)} %`);
  if (t.cpu_percent !== undefined) fact("CPU", `${Math.round(t.cpu_percent)} %`);
  if (t.memory_used_bytes !== undefined) fact("Memory", `${fmt.bytes(t.memory_used_bytes)} of ${fmt.bytes(t.memory_total_bytes)}`);
  if (t.disk_used_bytes !== undefined) fact("Disk", `${fmt.bytes(t.disk_used_bytes)} of ${fmt.bytes(t.disk_total_bytes)}`);
  if (t.uptime_secs !== undefined) fact("Uptime", fmt.duration(t.uptime_secs));
  if (t.position) {
    const p = t.position;
    fact("Position", `x ${p.x.toFixed(2)}, y ${p.y.toFixed(2)}${p.theta !== undefined ? `, θ ${p.theta.toFixed(2)}` : ""}${p.frame ? ` (${p.frame})` : ""}`);
  }
  for (const [k, v] of Object.entries(t.metrics || {})) fact(k, Number.isInteger(v) ? String(v) : v.toFixed(2));
}

function renderReports(list) {
  const { el, fmt } = ctx;
  const body = ctx.clear(parts.reports);
  parts.empty.hidden = list.length > 0;
  for (const r of list) {
    const details = el("td", { class: "report-details" });
    if (r.version) details.append(el("div", {}, `version ${r.version}`));
    if (r.progress_percent !== null && r.progress_percent !== undefined) details.append(el("div", {}, `${r.progress_percent} %`));
    if (r.error) details.append(el("div", { class: "error" }, r.error));
    if (r.reason) details.append(el("div", { class: "reason" }, r.reason));
    if (r.log_tail) details.append(el("details", {}, el("summary", {}, "log tail"), el("pre", { class: "log" }, r.log_tail)));
    body.append(
      el("tr", { "data-report-id": r.report_id },
        el("td", { class: "col-received", title: fmt.absolute(r.received_at) }, fmt.ago(r.received_at)),
        el("td", { class: "col-rstatus" }, fmt.statusBadge(r.status),
          r.rollout_id ? el("div", { class: "muted small" }, `rollout #${r.rollout_id}`) : null),
        details,
      ),
    );
  }
}
