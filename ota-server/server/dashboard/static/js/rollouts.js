// Rollouts: the list with progress bars (view `rollouts`) and one rollout (view `rollout`, route
// `#/rollout/<id>`: its facts, its actions, H's guard charts; fleet.js lists its robots below). Kept live from
// `rollout_updated` events. Actions go through the same API as `ota-server rollout pause|resume|abort|next|
// retry`; operators see the buttons, viewers none; abort asks first.

import * as charts from "./charts.js";
import * as form from "./rollout-form.js";

const SEGMENTS = [
  ["succeeded", "succeeded"],
  ["failed", "failed"],
  ["rolled_back", "rolled back"],
  ["in_progress", "in progress"],
];

/** Rollouts by id. */
export const rollouts = new Map();

/** Stores `r` unless the copy we hold is newer (a greater `revision`): an action's answer, an event and a list
 *  can arrive in any order. Returns whether `r` was stored. */
function keep(r) {
  const before = rollouts.get(r.rollout_id);
  if (before && before.revision > r.revision) return false;
  rollouts.set(r.rollout_id, r);
  return true;
}

let ctx;
let scheduled = false;
let shown = null; // rollout id in the rollout view
let guards = null; // the guard charts' container of the shown rollout

export function mount(c) {
  ctx = c;
  form.mount(ctx);
  ctx.on("resync", load);
  ctx.on("rollout_updated", (r) => {
    const before = rollouts.get(r.rollout_id);
    if (!keep(r)) return;
    if (!before || before.state !== r.state) {
      ctx.announce(`Rollout ${r.rollout_id} (${r.name}) is ${r.state}${r.pause_reason ? `: ${r.pause_reason}` : ""}`);
    }
    render();
  });
  ctx.on("signin", () => {
    const bar = ctx.clear(document.getElementById("rollout-actions"));
    if (!ctx.can("operator")) return;
    bar.append(
      ctx.el("button", { type: "button", class: "action", id: "new-rollout", onclick: () => ctx.go("#/rollouts/new") }, "New rollout"),
      ctx.el("button", { type: "button", class: "secondary", id: "new-revert", onclick: () => ctx.go("#/rollouts/revert") }, "Revert a group"),
    );
  });
  ctx.on("route", (route) => {
    if (route.name === "rollout") openRollout(Number(route.id));
    else shown = null;
    if (route.name === "new-rollout") form.show(route.id === "revert");
  });
}

/** The snapshot; an event that arrived while it was on its way (greater `revision`) wins over it. */
async function load() {
  const list = await ctx.api.get("/api/rollouts");
  const ids = new Set(list.map((r) => r.rollout_id));
  for (const id of [...rollouts.keys()]) if (!ids.has(id)) rollouts.delete(id);
  for (const r of list) keep(r);
  render();
}

/** Redraws at most once per frame, however many events arrive. */
function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    drawList();
    if (shown !== null) drawRollout();
  });
}

function summary() {
  let active = 0, paused = 0;
  for (const r of rollouts.values()) {
    if (r.state === "active") active++;
    else if (r.state === "paused") paused++;
  }
  return `${active} active rollout${active === 1 ? "" : "s"}${paused ? ` · ${paused} paused` : ""}`;
}

/** The progress bar and its one-line text of a rollout. */
function progress(r) {
  const { el } = ctx;
  const c = r.counts;
  const total = Math.max(1, c.targeted);
  const bar = el("div", { class: "bar", role: "img" });
  const parts = [];
  for (const [key, label] of SEGMENTS) {
    const n = c[key] || 0;
    parts.push(`${n} ${label}`);
    if (n > 0) bar.append(el("span", { class: `seg seg-${key}`, style: { width: `${(100 * n) / total}%` }, title: `${n} ${label}` }));
  }
  bar.setAttribute("aria-label", `${parts.join(", ")} of ${c.targeted} targeted (${c.offered} offered)`);
  const done = c.succeeded + c.failed + c.rolled_back;
  const pct = c.targeted ? Math.round((100 * done) / c.targeted) : 0;
  const text = `${done} of ${c.targeted} done (${pct} %) · ${c.in_progress} in progress · ${c.offered} offered`
    + (c.waiting ? ` · ${c.waiting} waiting` : "") + (c.timed_out ? ` · ${c.timed_out} timed out` : "");
  return [bar, el("div", { class: "small" }, text)];
}

function stageText(r) {
  const stage = r.stages[r.current_stage];
  return [`${r.current_stage + 1} of ${r.stages.length}`,
    r.stages.length > 1 ? `${stage ?? "?"} % (${r.stages.join(" → ")} %)` : `${stage ?? "?"} %`];
}

function targets(r) {
  const { el, fmt } = ctx;
  const tags = Object.entries(r.tags || {});
  return [tags.length ? fmt.tagChips(r.tags) : el("span", { class: "muted" }, "all devices"),
    r.filter && r.filter.group ? el("div", { class: "muted small" }, `group ${r.filter.group}`) : null,
    r.filter && r.filter.versions ? el("div", { class: "muted small" }, `versions ${r.filter.versions}`) : null,
    r.revert ? el("div", { class: "small" }, "revert") : null];
}

function drawList() {
  const { el, fmt } = ctx;
  ctx.emit("summary", { key: "rollouts", text: summary() });
  const body = ctx.clear(document.getElementById("rollout-rows"));
  const list = [...rollouts.values()].sort((a, b) => b.rollout_id - a.rollout_id);
  document.getElementById("no-rollouts").hidden = list.length > 0;
  for (const r of list) {
    const c = r.counts;
    const [stage, stages] = stageText(r);
    body.append(
      el("tr", { "data-rollout-id": r.rollout_id },
        el("td", {}, el("button", {
          type: "button", class: "rollout-link", onclick: () => ctx.go(`#/rollout/${r.rollout_id}`),
          "aria-label": `Open rollout ${r.rollout_id}`,
        }, `#${r.rollout_id}`), " ", r.name,
        el("div", { class: "muted small", title: r.bundle_id }, `created ${fmt.ago(r.created_at)}`)),
        el("td", {}, r.version, el("div", { class: "muted small" }, r.compatible)),
        el("td", {}, ...targets(r)),
        el("td", { class: "col-stage" }, stage, el("div", { class: "muted small" }, stages)),
        el("td", {}, el("span", { class: `badge rs-${r.state}` }, r.state),
          r.pause_reason ? el("div", { class: "reason small" }, r.pause_reason) : null),
        el("td", { class: "col-progress" }, ...progress(r)),
        el("td", { class: "num col-failures" },
          el("span", { class: c.failed + c.rolled_back ? "fail-count" : "muted" }, `${c.failed + c.rolled_back}`),
          el("div", { class: "muted small" }, `${c.failed} failed · ${c.rolled_back} rolled back`),
          el("div", { class: "muted small" }, `pauses above ${Math.round(r.failure_threshold * 100)} %`)),
      ),
    );
  }
}

// ---------- one rollout ----------

async function openRollout(id) {
  const first = shown !== id;
  shown = id;
  if (first) guards = null;
  if (!rollouts.has(id)) {
    try {
      const detail = await ctx.api.get(`/api/rollouts/${id}`);
      keep(detail.rollout);
    } catch (e) {
      ctx.toast(`Could not load rollout ${id}: ${e.message}`, "error");
      return;
    }
  }
  if (shown === id) drawRollout();
}

/** What each action is called, when it applies, and whether it asks first. */
const ACTIONS = [
  ["pause", "Pause", (r) => r.state === "active"],
  ["resume", "Resume", (r) => r.state === "paused"],
  ["next", "Next stage", (r) => ["active", "paused"].includes(r.state) && r.current_stage + 1 < r.stages.length],
  ["retry", "Retry failed", (r) => ["active", "paused", "completed"].includes(r.state) && r.counts.failed + r.counts.rolled_back > 0],
  ["abort", "Abort", (r) => ["active", "paused"].includes(r.state)],
];

async function act(r, action, label) {
  if (action === "abort") {
    const ok = await ctx.confirm(`Abort rollout #${r.rollout_id} (${r.name}) for good? Robots not updated yet stay on what they run.`, "Abort rollout");
    if (!ok) return;
  }
  try {
    const info = await ctx.api.post(`/api/rollouts/${r.rollout_id}/${action}`);
    keep(info);
    ctx.toast(`Rollout #${info.rollout_id}: ${label.toLowerCase()} done; it is ${info.state}`);
    render();
  } catch (e) {
    ctx.toast(`${label} failed: ${e.message}`, "error");
  }
}

function drawRollout() {
  const { el, fmt } = ctx;
  const r = rollouts.get(shown);
  const node = ctx.view("rollout");
  if (!r) return;
  const keepCharts = guards;
  ctx.clear(node);
  const [stage, stages] = stageText(r);
  const facts = el("dl", { class: "facts wide" });
  const fact = (k, ...v) => facts.append(el("dt", {}, k), el("dd", {}, ...v));
  fact("Version", `${r.version} (${r.compatible})`);
  fact("Bundle", el("code", {}, r.bundle_id.slice(0, 16)));
  fact("Targets", ...targets(r));
  fact("Stage", `${stage}: ${stages}`);
  fact("Pauses above", `${Math.round(r.failure_threshold * 100)} % failed or rolled back`);
  if (r.rules && (r.rules.soak_secs || r.rules.deadline_secs)) {
    fact("Stage rules", `soak ${fmt.duration(r.rules.soak_secs)} · deadline ${r.rules.deadline_secs ? fmt.duration(r.rules.deadline_secs) : "none"}`);
  }
  if (r.schedule && r.schedule.windows && r.schedule.windows.length) {
    fact("Windows", r.schedule.windows.map((w) => `${(w.days || []).join(",") || "every day"} ${w.start}–${w.end}`).join("; ") +
      ` (${r.schedule.timezone || "UTC"})`);
  }
  if (r.start_at) fact("Starts", fmt.absolute(r.start_at));
  if (r.guards && r.guards.length) {
    fact("Guards", r.guards.map((g) => `${g.metric}:${g.stat}${g.max !== undefined && g.max !== null ? ` > ${g.max}` : ""}` +
      `${g.max_increase_percent !== undefined && g.max_increase_percent !== null ? ` > +${g.max_increase_percent} %` : ""}`).join("; "));
  }
  if (r.require_confirmation) fact("Confirmation", "robots wait for ota-client approve");
  fact("Created", `${fmt.ago(r.created_at)} (${fmt.absolute(r.created_at)})`);
  const actions = el("div", { class: "actions left rollout-buttons" });
  if (ctx.can("operator")) {
    for (const [action, label, applies] of ACTIONS) {
      if (!applies(r)) continue;
      actions.append(el("button", {
        type: "button", class: action === "abort" ? "danger" : "action", "data-action": action,
        onclick: () => act(r, action, label),
      }, label));
    }
  }
  if (!guards) guards = el("div", { class: "guard-charts" });
  node.append(...[
    el("div", { class: "card-head" },
      el("button", { type: "button", class: "link-button back", onclick: () => ctx.back() }, "← Back"),
      el("h2", { id: "rollout-title" }, `#${r.rollout_id} ${r.name}`),
      el("span", { class: `badge rs-${r.state}`, id: "rollout-state" }, r.state)),
    r.pause_reason ? el("p", { class: "reason" }, r.pause_reason) : null,
    el("div", { class: "col-progress" }, ...progress(r)),
    actions,
    facts,
    guards,
  ].filter(Boolean));
  if (!keepCharts) charts.rolloutGuards(ctx, guards, r.rollout_id);
}
