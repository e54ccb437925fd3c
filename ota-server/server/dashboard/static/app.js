// OTA fleet dashboard: plain JS, no build step, no external resources.
//
// * Token: `#token=...` in the URL fragment (never sent to the server, so never in its logs) or the sign-in form;
//   kept in sessionStorage (this tab only) and sent as `Authorization: Bearer <token>`.
// * Live updates: GET /api/events is read with fetch() + a stream reader (EventSource cannot send an
//   Authorization header); `event:`/`data:` lines are parsed here. On every (re)connect the lists are fetched
//   again after the stream is open, so nothing that happens in between is missed; reconnects back off
//   0.5 s → 15 s with jitter.
// * Health rule: a device is flagged "failing" when at least 2 of its last 5 reports are `failure` or
//   `rolled_back`; "last failed" when only its latest status is. Report histories come from GET
//   /api/devices/{id} (fetched at load for devices whose last status is bad, and when a device is opened) and
//   from live `report` events.
// * Untrusted strings (everything a device sends) only ever reach the page through textContent / attributes
//   set with setAttribute; there is no innerHTML anywhere.
"use strict";

(() => {
  const TOKEN_KEY = "ota-admin-token";
  const MAX_ROWS = 500; // rows rendered at once; the filter narrows large fleets
  const HISTORY = 5; // reports considered by the health rule
  const BAD_THRESHOLD = 2; // failures among them that flag a device
  const BAD = new Set(["failure", "rolled_back"]);

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    devices: new Map(), // device_id -> DeviceInfo
    rollouts: new Map(), // rollout_id -> RolloutInfo
    history: new Map(), // device_id -> [ReportRecord] newest first (possibly partial, see health rule)
    selected: null, // device_id shown in the detail panel
    rows: new Map(), // device_id -> <tr>
    stream: null, // AbortController of the event stream
    ready: false, // lists loaded (events before that are queued)
    queued: [],
    backoff: 500,
    pending: [], // DeviceIdentity of robots waiting for an operator's admission
  };

  // ---------- small DOM helpers (text only) ----------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function announce(message) {
    const box = $("announcer");
    box.append(el("p", {}, message));
    while (box.childNodes.length > 5) box.removeChild(box.firstChild);
  }

  // ---------- formatting ----------

  function ago(ts) {
    if (ts === null || ts === undefined) return "never";
    const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function absolute(ts) {
    return ts ? new Date(ts * 1000).toLocaleString() : "";
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function duration(secs) {
    if (secs === null || secs === undefined) return "–";
    const d = Math.floor(secs / 86400), h = Math.floor((secs % 86400) / 3600), m = Math.floor((secs % 3600) / 60);
    return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
  }

  const STATUS_LABEL = {
    downloading: "downloading", installing: "installing", rebooting: "rebooting",
    success: "success", failure: "failure", rolled_back: "rolled back", pending: "pending",
  };

  function statusBadge(status, extra) {
    const label = STATUS_LABEL[status] || String(status);
    return el("span", { class: `badge st-${String(status).replace(/[^a-z_]/g, "")}` }, label, extra || null);
  }

  // ---------- health ----------

  function health(d) {
    const reports = state.history.get(d.device_id);
    if (reports && reports.length) {
      const bad = reports.slice(0, HISTORY).filter((r) => BAD.has(r.status)).length;
      if (bad >= BAD_THRESHOLD) return { level: "bad", text: `failing (${bad}/${Math.min(HISTORY, reports.length)})` };
    }
    if (d.last_status && BAD.has(d.last_status.status)) return { level: "warn", text: "last failed" };
    return { level: "ok", text: "ok" };
  }

  // ---------- API ----------

  class AuthError extends Error {}

  async function api(path) {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
    if (res.status === 401 || res.status === 403) throw new AuthError(await errorText(res));
    if (!res.ok) throw new Error(`${path}: ${await errorText(res)}`);
    return res.json();
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body.error || `HTTP ${res.status}`;
    } catch {
      return `HTTP ${res.status}`;
    }
  }

  async function loadLists() {
    const [devices, rollouts, identities] = await Promise.all([
      api("/api/devices"),
      api("/api/rollouts"),
      api("/api/admission"),
    ]);
    state.pending = identities.filter((i) => i.admission === "pending");
    state.devices = new Map(devices.map((d) => [d.device_id, d]));
    state.rollouts = new Map(rollouts.map((r) => [r.rollout_id, r]));
    for (const id of state.history.keys()) if (!state.devices.has(id)) state.history.delete(id);
    renderRollouts();
    renderDevices(true);
    if (state.selected) openDevice(state.selected, false);
    // Histories for the devices whose last status is bad (bounded), so the health rule can look further back.
    const suspects = devices.filter((d) => d.last_status && BAD.has(d.last_status.status)).slice(0, 200);
    fetchHistories(suspects.map((d) => d.device_id));
  }

  async function fetchHistories(ids) {
    const queue = ids.slice();
    const worker = async () => {
      while (queue.length) {
        const id = queue.shift();
        try {
          const detail = await api(`/api/devices/${encodeURIComponent(id)}`);
          state.history.set(id, detail.reports);
          updateRow(id);
        } catch (e) {
          if (e instanceof AuthError) return;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  }

  // ---------- event stream ----------

  function setConn(kind, text) {
    const c = $("conn");
    c.className = `conn conn-${kind}`;
    c.textContent = text;
  }

  async function connect() {
    if (state.stream) state.stream.abort();
    const controller = new AbortController();
    state.stream = controller;
    state.ready = false;
    state.queued = [];
    setConn("wait", "connecting…");
    try {
      const res = await fetch("/api/events", {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (res.status === 401 || res.status === 403) throw new AuthError(await errorText(res));
      if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
      // Subscribed: now take the snapshot, then apply what arrived meanwhile.
      const reading = readStream(res.body, controller);
      await loadLists();
      state.ready = true;
      for (const [type, data] of state.queued.splice(0)) apply(type, data);
      state.backoff = 500;
      setConn("live", "live");
      await reading;
      if (!controller.signal.aborted) throw new Error("event stream ended");
    } catch (e) {
      if (controller.signal.aborted) return;
      if (e instanceof AuthError) {
        signOut(`Token rejected: ${e.message}`);
        return;
      }
      const wait = Math.min(15000, state.backoff) * (0.75 + Math.random() * 0.5);
      state.backoff = Math.min(15000, state.backoff * 2);
      setConn("wait", `reconnecting in ${Math.ceil(wait / 1000)} s`);
      console.warn("event stream:", e);
      setTimeout(() => {
        if (state.stream === controller) connect();
      }, wait);
    }
  }

  async function readStream(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    controller.signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
    let buffer = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // incomplete last line
      for (const line of lines) {
        if (line === "") {
          if (data.length) dispatch(type || "message", data.join("\n"));
          type = "";
          data = [];
        } else if (line.startsWith(":")) {
          if (line.includes("lagged")) loadLists().catch((e) => console.warn(e)); // events were dropped
        } else {
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? "" : line.slice(i + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") type = val;
          else if (field === "data") data.push(val);
        }
      }
    }
  }

  function dispatch(type, text) {
    let data;
    try {
      data = JSON.parse(text);
    } catch {
      return;
    }
    if (state.ready) apply(type, data);
    else state.queued.push([type, data]);
  }

  function apply(type, data) {
    switch (type) {
      case "device_updated": {
        const before = state.devices.get(data.device_id);
        state.devices.set(data.device_id, data);
        if (before) updateRow(data.device_id);
        else scheduleDevices();
        if (state.selected === data.device_id) renderFacts(data);
        break;
      }
      case "report": {
        const { device_id: id, report } = data;
        const list = state.history.get(id) || [];
        if (!list.some((r) => r.report_id === report.report_id)) list.unshift(report);
        state.history.set(id, list.slice(0, 200));
        if (BAD.has(report.status) || report.status === "success") {
          const msg = report.error || report.reason;
          announce(`${id}: ${STATUS_LABEL[report.status]}${report.rollout_id ? ` (rollout ${report.rollout_id})` : ""}${msg ? ` – ${msg}` : ""}`);
        }
        updateRow(id);
        if (state.selected === id) renderReports(state.history.get(id));
        break;
      }
      case "rollout_updated": {
        const before = state.rollouts.get(data.rollout_id);
        if (before && before.updated_at > data.updated_at) break; // older than what we have
        state.rollouts.set(data.rollout_id, data);
        if (!before || before.state !== data.state) {
          announce(`Rollout ${data.rollout_id} (${data.name}) is ${data.state}${data.pause_reason ? `: ${data.pause_reason}` : ""}`);
        }
        renderRollouts();
        break;
      }
      case "device_deleted": {
        state.devices.delete(data.device_id);
        state.history.delete(data.device_id);
        if (state.selected === data.device_id) closeDevice();
        scheduleDevices();
        break;
      }
      default:
        break;
    }
    renderSummary();
  }

  // ---------- rollouts ----------

  const SEGMENTS = [
    ["succeeded", "succeeded"],
    ["failed", "failed"],
    ["rolled_back", "rolled back"],
    ["in_progress", "in progress"],
  ];

  let rolloutsScheduled = false;
  function renderRollouts() {
    if (rolloutsScheduled) return;
    rolloutsScheduled = true;
    requestAnimationFrame(() => {
      rolloutsScheduled = false;
      drawRollouts();
    });
  }

  function drawRollouts() {
    const body = $("rollout-rows");
    clear(body);
    const list = [...state.rollouts.values()].sort((a, b) => b.rollout_id - a.rollout_id);
    $("no-rollouts").hidden = list.length > 0;
    for (const r of list) {
      const c = r.counts;
      const total = Math.max(1, c.targeted);
      const bar = el("div", { class: "bar", role: "img" });
      const parts = [];
      for (const [key, label] of SEGMENTS) {
        const n = c[key] || 0;
        parts.push(`${n} ${label}`);
        if (n > 0) bar.append(el("span", { class: `seg seg-${key}`, style: `width:${(100 * n) / total}%`, title: `${n} ${label}` }));
      }
      bar.setAttribute("aria-label", `${parts.join(", ")} of ${c.targeted} targeted (${c.offered} offered)`);
      const done = c.succeeded + c.failed + c.rolled_back;
      const pct = c.targeted ? Math.round((100 * done) / c.targeted) : 0;
      const stage = r.stages[r.current_stage];
      const tags = Object.entries(r.tags || {});
      body.append(
        el("tr", { "data-rollout-id": r.rollout_id },
          el("td", {}, el("strong", {}, `#${r.rollout_id}`), " ", r.name,
            el("div", { class: "muted small", title: r.bundle_id }, `created ${ago(r.created_at)}`)),
          el("td", {}, r.version, el("div", { class: "muted small" }, r.compatible)),
          el("td", {}, tags.length ? tagChips(r.tags) : el("span", { class: "muted" }, "all devices"),
            r.filter && r.filter.group ? el("div", { class: "muted small" }, `group ${r.filter.group}`) : null,
            r.revert ? el("div", { class: "small" }, "revert") : null),
          el("td", { class: "col-stage" }, `${r.current_stage + 1} of ${r.stages.length}`,
            el("div", { class: "muted small" },
              r.stages.length > 1 ? `${stage ?? "?"} % (${r.stages.join(" → ")} %)` : `${stage ?? "?"} %`)),
          el("td", {}, el("span", { class: `badge rs-${r.state}` }, r.state),
            r.pause_reason ? el("div", { class: "reason small" }, r.pause_reason) : null),
          el("td", { class: "col-progress" }, bar,
            el("div", { class: "small" },
              `${done} of ${c.targeted} done (${pct} %) · ${c.in_progress} in progress · ${c.offered} offered`
              + (c.waiting ? ` · ${c.waiting} waiting` : "") + (c.timed_out ? ` · ${c.timed_out} timed out` : ""))),
          el("td", { class: "num col-failures" },
            el("span", { class: c.failed + c.rolled_back ? "fail-count" : "muted" }, `${c.failed + c.rolled_back}`),
            el("div", { class: "muted small" }, `${c.failed} failed · ${c.rolled_back} rolled back`),
            el("div", { class: "muted small" }, `pauses above ${Math.round(r.failure_threshold * 100)} %`)),
        ),
      );
    }
  }

  function tagChips(tags) {
    const wrap = el("span", { class: "tags" });
    for (const [k, v] of Object.entries(tags || {})) wrap.append(el("span", { class: "tag" }, `${k}=${v}`));
    return wrap;
  }

  // ---------- devices ----------

  let devicesScheduled = false;
  function scheduleDevices() {
    if (devicesScheduled) return;
    devicesScheduled = true;
    requestAnimationFrame(() => {
      devicesScheduled = false;
      renderDevices(false);
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

  function renderDevices() {
    const q = $("filter").value.trim().toLowerCase();
    const all = [...state.devices.values()];
    const shown = all.filter((d) => matches(d, q)).sort((a, b) => a.device_id.localeCompare(b.device_id));
    const body = $("device-rows");
    const keep = new Map();
    const frag = document.createDocumentFragment();
    for (const d of shown.slice(0, MAX_ROWS)) {
      const row = state.rows.get(d.device_id) || el("tr");
      fillRow(row, d);
      keep.set(d.device_id, row);
      frag.append(row);
    }
    clear(body);
    body.append(frag);
    state.rows = keep;
    $("no-devices").hidden = all.length > 0;
    const more = $("more-devices");
    more.hidden = shown.length <= MAX_ROWS;
    more.textContent = `Showing ${MAX_ROWS} of ${shown.length} matching devices; narrow the filter to see the rest.`;
    $("fleet-count").textContent = q ? `${shown.length} of ${all.length}` : `${all.length} devices`;
    renderSummary();
  }

  function updateRow(id) {
    const row = state.rows.get(id);
    const d = state.devices.get(id);
    if (row && d) fillRow(row, d);
    renderSummary();
  }

  function fillRow(row, d) {
    const t = d.telemetry || {};
    const h = health(d);
    const ls = d.last_status;
    row.setAttribute("data-device-id", d.device_id);
    row.setAttribute("data-status", ls ? ls.status : "");
    row.setAttribute("data-health", h.level);
    row.className = state.selected === d.device_id ? "selected" : "";
    clear(row);
    const open = el("button", { type: "button", class: "device-link", "aria-label": `Show history of ${d.device_id}` }, d.device_id);
    open.addEventListener("click", () => openDevice(d.device_id, true));
    const slots = Object.entries(d.slots || {}).map(([s, v]) => `${s}: ${v}`).join(", ");
    const battery = t.battery_percent;
    row.append(
      el("th", { scope: "row", class: "col-device" }, open),
      el("td", { class: "col-compatible" }, d.compatible),
      el("td", { class: "col-tags" }, tagChips({ ...(d.tags || {}), ...(d.labels || {}) }),
        d.group ? el("div", { class: "muted small" }, `group ${d.group}`) : null),
      el("td", { class: "col-version" }, d.current_version || el("span", { class: "muted" }, "unknown")),
      el("td", { class: "col-slot", title: slots || null }, d.booted_slot || "–"),
      el("td", { class: "col-seen", "data-ts": d.last_seen ?? "", title: absolute(d.last_seen) }, ago(d.last_seen)),
      el("td", { class: "col-status", title: ls ? [ls.error, ls.reason, absolute(ls.at)].filter(Boolean).join(" · ") : null },
        ls ? statusBadge(ls.status, ls.rollout_id ? el("span", { class: "badge-extra" }, ` #${ls.rollout_id}`) : null)
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

  // Summary and rollouts are redrawn at most once per frame, however many events arrive.
  let summaryScheduled = false;
  function renderSummary() {
    if (summaryScheduled) return;
    summaryScheduled = true;
    requestAnimationFrame(() => {
      summaryScheduled = false;
      drawSummary();
    });
  }

  function drawSummary() {
    let bad = 0, warn = 0, active = 0, paused = 0, frozen = 0;
    for (const d of state.devices.values()) {
      if (d.freeze_alarm) frozen++;
      const h = health(d).level;
      if (h === "bad") bad++;
      else if (h === "warn") warn++;
    }
    for (const r of state.rollouts.values()) {
      if (r.state === "active") active++;
      else if (r.state === "paused") paused++;
    }
    $("summary").textContent =
      `${state.devices.size} devices · ${active} active rollout${active === 1 ? "" : "s"}` +
      `${paused ? ` · ${paused} paused` : ""} · ${bad} failing · ${warn} last failed` +
      (frozen ? ` · ${frozen} frozen (no fresh signed metadata; filter "frozen")` : "") +
      (state.pending.length
        ? ` · ${state.pending.length} waiting for admission (ota-server devices pending): ` +
          state.pending.slice(0, 5).map((i) => i.device_id).join(", ")
        : "");
  }

  // ---------- device detail ----------

  async function openDevice(id, focus) {
    state.selected = id;
    for (const [rid, row] of state.rows) row.className = rid === id ? "selected" : "";
    const panel = $("detail");
    panel.hidden = false;
    $("detail-title").textContent = id;
    const d = state.devices.get(id);
    if (d) renderFacts(d);
    if (state.history.has(id)) renderReports(state.history.get(id));
    $("detail-loading").hidden = false;
    if (focus) $("detail-close").focus();
    try {
      const detail = await api(`/api/devices/${encodeURIComponent(id)}`);
      if (state.selected !== id) return;
      state.devices.set(id, detail.device);
      state.history.set(id, detail.reports);
      renderFacts(detail.device);
      renderReports(detail.reports);
      updateRow(id);
    } catch (e) {
      if (e instanceof AuthError) signOut(e.message);
      else announce(`Could not load ${id}: ${e.message}`);
    } finally {
      if (state.selected === id) $("detail-loading").hidden = true;
    }
  }

  function closeDevice() {
    const id = state.selected;
    state.selected = null;
    $("detail").hidden = true;
    const row = id && state.rows.get(id);
    if (row) {
      row.className = "";
      const b = row.querySelector("button");
      if (b) b.focus();
    }
  }

  function renderFacts(d) {
    const t = d.telemetry || {};
    const dl = $("detail-facts");
    clear(dl);
    const fact = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
    fact("Compatible", d.compatible);
    fact("Version", d.current_version || "unknown");
    fact("Slots", Object.entries(d.slots || {}).map(([s, v]) => `${s}: ${v}${s === d.booted_slot ? " (booted)" : ""}`).join(", ") || "–");
    fact("Tags", tagChips(d.tags));
    fact("Last seen", d.last_seen ? `${ago(d.last_seen)} (${absolute(d.last_seen)})` : "never");
    fact("Enrolled", absolute(d.enrolled_at));
    fact("Health", health(d).text);
    if (t.battery_percent !== undefined) fact("Battery", `${Math.round(t.battery_percent)} %`);
    if (t.cpu_percent !== undefined) fact("CPU", `${Math.round(t.cpu_percent)} %`);
    if (t.memory_used_bytes !== undefined) fact("Memory", `${bytes(t.memory_used_bytes)} of ${bytes(t.memory_total_bytes)}`);
    if (t.disk_used_bytes !== undefined) fact("Disk", `${bytes(t.disk_used_bytes)} of ${bytes(t.disk_total_bytes)}`);
    if (t.uptime_secs !== undefined) fact("Uptime", duration(t.uptime_secs));
    if (t.position) {
      const p = t.position;
      fact("Position", `x ${p.x.toFixed(2)}, y ${p.y.toFixed(2)}${p.theta !== undefined ? `, θ ${p.theta.toFixed(2)}` : ""}${p.frame ? ` (${p.frame})` : ""}`);
    }
    for (const [k, v] of Object.entries(t.metrics || {})) fact(k, Number.isInteger(v) ? String(v) : v.toFixed(2));
  }

  function renderReports(reports) {
    const body = $("report-rows");
    clear(body);
    $("no-reports").hidden = reports.length > 0;
    for (const r of reports) {
      const details = el("td", { class: "report-details" });
      if (r.version) details.append(el("div", {}, `version ${r.version}`));
      if (r.progress_percent !== null && r.progress_percent !== undefined) details.append(el("div", {}, `${r.progress_percent} %`));
      if (r.error) details.append(el("div", { class: "error" }, r.error));
      if (r.reason) details.append(el("div", { class: "reason" }, r.reason));
      if (r.log_tail) {
        details.append(el("details", {}, el("summary", {}, "log tail"), el("pre", { class: "log" }, r.log_tail)));
      }
      body.append(
        el("tr", { "data-report-id": r.report_id },
          el("td", { class: "col-received", title: absolute(r.received_at) }, ago(r.received_at)),
          el("td", { class: "col-rstatus" }, statusBadge(r.status),
            r.rollout_id ? el("div", { class: "muted small" }, `rollout #${r.rollout_id}`) : null),
          details,
        ),
      );
    }
  }

  // ---------- sign-in ----------

  function showLogin(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    $("login-error").textContent = message || "";
    setConn("off", "not connected");
    $("token-input").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    if (state.stream) state.stream.abort();
    state.stream = null;
    showLogin(message);
  }

  function start(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    connect();
  }

  function init() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search); // drop the token from the URL
    }
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (value) {
        $("token-input").value = "";
        start(value);
      }
    });
    $("logout").addEventListener("click", () => signOut(""));
    $("detail-close").addEventListener("click", closeDevice);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && state.selected) closeDevice();
    });
    let filterTimer = null;
    $("filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => renderDevices(), 120);
    });
    // Relative times age in place.
    setInterval(() => {
      for (const cell of document.querySelectorAll("td.col-seen")) {
        const ts = cell.getAttribute("data-ts");
        cell.textContent = ago(ts === "" ? null : Number(ts));
      }
    }, 5000);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) start(token);
    else showLogin("");
  }

  init();
})();
