// One robot (view `robot`, route `#/robot/<id>`): its facts, its report history (newest first, live), H's
// telemetry charts, and for operators its actions: edit its operator tags and group (`PUT
// /api/devices/{id}/labels`, like `ota-server devices label`) and decommission it (`DELETE /api/devices/{id}`,
// asks first). A side panel beside the fleet on a wide screen, a full-screen sheet under 600 px.

import { devices, health } from "./fleet.js";
import * as charts from "./charts.js";

let ctx;
let current = null; // device id shown
let parts = null; // the view's elements
let reports = []; // its reports, newest first

export function mount(c) {
  ctx = c;
  ctx.on("route", (route) => {
    if (route.name === "robot") open(route.id);
    else close();
  });
  ctx.on("device_updated", (d) => {
    if (d.device_id === current) renderFacts(d);
  });
  ctx.on("report", ({ device_id: id, report }) => {
    if (id !== current || reports.some((r) => r.report_id === report.report_id)) return;
    reports.unshift(report);
    renderReports(reports);
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
    actions: el("div", { class: "robot-actions" }),
    charts: el("div", { class: "robot-charts" }),
    loading: el("p", { id: "detail-loading", class: "muted", hidden: true }, "Loading…"),
    reports: el("tbody", { id: "report-rows" }),
    empty: el("p", { id: "no-reports", class: "empty", hidden: true }, "No reports from this device."),
  };
  node.append(
    el("div", { class: "card-head" }, parts.close, parts.title),
    parts.facts,
    parts.actions,
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
  if (first) {
    reports = [];
    renderReports(reports);
  }
  parts.loading.hidden = false;
  if (first) {
    parts.close.focus();
    charts.robotCharts(ctx, parts.charts, id);
  }
  try {
    const detail = await ctx.api.get(`/api/devices/${encodeURIComponent(id)}`);
    if (current !== id) return;
    devices.set(id, detail.device);
    const known = new Set(detail.reports.map((r) => r.report_id));
    reports = [...reports.filter((r) => !known.has(r.report_id)), ...detail.reports];
    renderFacts(detail.device);
    renderReports(reports);
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
  if (Object.keys(d.labels || {}).length) fact("Operator tags", fmt.tagChips(d.labels));
  renderActions(d);
  fact("Last seen", d.last_seen ? `${fmt.ago(d.last_seen)} (${fmt.absolute(d.last_seen)})` : "never");
  fact("Enrolled", fmt.absolute(d.enrolled_at));
  fact("Health", health(d).text);
  fact("Group", d.group || "none");
  if (d.maintenance_score !== null && d.maintenance_score !== undefined) fact("Maintenance score", `${Math.round(d.maintenance_score)}`);
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

// ---------- actions (operators) ----------

/** The action buttons; an open tags form stays while live updates arrive, unless `force`. */
function renderActions(d, force) {
  const { el } = ctx;
  if (!force && parts.actions.querySelector("#labels-form")) return;
  const box = ctx.clear(parts.actions);
  if (!ctx.can("operator")) return;
  box.append(el("div", { class: "actions left" },
    el("button", { type: "button", class: "action", "data-action": "edit-labels", onclick: () => editLabels(d) }, "Edit tags and group"),
    el("button", { type: "button", class: "danger", "data-action": "decommission", onclick: () => decommission(d.device_id) }, "Decommission"),
  ));
}

function editLabels(d) {
  const { el } = ctx;
  const box = ctx.clear(parts.actions);
  const tags = el("textarea", { id: "labels-tags", spellcheck: "false" },
    Object.entries(d.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n"));
  const group = el("input", { id: "labels-group", type: "text", value: d.group || "", spellcheck: "false" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { class: "console", id: "labels-form" },
    el("label", { for: "labels-tags" }, "Operator tags"), tags,
    el("p", { class: "hint" }, "key=value per line; they override the robot's own tags for targeting"),
    el("label", { for: "labels-group" }, "Group"), group,
    el("p", { class: "hint" }, "empty: no group"),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", onclick: () => renderActions(devices.get(d.device_id) || d, true) }, "Cancel"),
      el("button", { type: "submit", class: "action", id: "labels-save" }, "Save")),
    error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const labels = {};
    for (const line of tags.value.split(/\n/).map((l) => l.trim()).filter(Boolean)) {
      const i = line.indexOf("=");
      if (i <= 0) {
        error.textContent = `'${line}' is not key=value`;
        return;
      }
      labels[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    try {
      const info = await ctx.api.put(`/api/devices/${encodeURIComponent(d.device_id)}/labels`,
        { tags: labels, group: group.value.trim() || null });
      devices.set(info.device_id, info);
      ctx.toast(`Saved the tags and group of ${info.device_id}`);
      ctx.clear(parts.actions);
      renderFacts(info);
    } catch (e) {
      error.textContent = e.message;
    }
  });
  box.append(form);
  tags.focus();
}

async function decommission(id) {
  const ok = await ctx.confirm(`Decommission ${id}? Its token stops working at once and its records are deleted; it must enroll again to come back.`, "Decommission");
  if (!ok) return;
  try {
    await ctx.api.del(`/api/devices/${encodeURIComponent(id)}`);
    ctx.toast(`Decommissioned ${id}`);
    devices.delete(id);
    ctx.back();
  } catch (e) {
    ctx.toast(`Could not decommission ${id}: ${e.message}`, "error");
  }
}
