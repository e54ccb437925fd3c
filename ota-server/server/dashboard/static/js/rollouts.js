// Rollouts: the list with progress bars (view `rollouts`), kept live from `rollout_updated` events.

const SEGMENTS = [
  ["succeeded", "succeeded"],
  ["failed", "failed"],
  ["rolled_back", "rolled back"],
  ["in_progress", "in progress"],
];

/** Rollouts by id (what the list shows; the rollout view reads it too). */
export const rollouts = new Map();

let ctx;
let scheduled = false;

export function mount(c) {
  ctx = c;
  ctx.on("resync", load);
  ctx.on("rollout_updated", (r) => {
    const before = rollouts.get(r.rollout_id);
    if (before && before.updated_at > r.updated_at) return; // older than what we have
    rollouts.set(r.rollout_id, r);
    if (!before || before.state !== r.state) {
      ctx.announce(`Rollout ${r.rollout_id} (${r.name}) is ${r.state}${r.pause_reason ? `: ${r.pause_reason}` : ""}`);
    }
    render();
  });
}

async function load() {
  const list = await ctx.api.get("/api/rollouts");
  rollouts.clear();
  for (const r of list) rollouts.set(r.rollout_id, r);
  render();
}

/** Redraws at most once per frame, however many events arrive. */
function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    draw();
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
export function progress(r) {
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

function draw() {
  const { el, fmt } = ctx;
  ctx.emit("summary", { key: "rollouts", text: summary() });
  const body = document.getElementById("rollout-rows");
  ctx.clear(body);
  const list = [...rollouts.values()].sort((a, b) => b.rollout_id - a.rollout_id);
  document.getElementById("no-rollouts").hidden = list.length > 0;
  for (const r of list) {
    const c = r.counts;
    const stage = r.stages[r.current_stage];
    const tags = Object.entries(r.tags || {});
    body.append(
      el("tr", { "data-rollout-id": r.rollout_id },
        el("td", {}, el("strong", {}, `#${r.rollout_id}`), " ", r.name,
          el("div", { class: "muted small", title: r.bundle_id }, `created ${fmt.ago(r.created_at)}`)),
        el("td", {}, r.version, el("div", { class: "muted small" }, r.compatible)),
        el("td", {}, tags.length ? fmt.tagChips(r.tags) : el("span", { class: "muted" }, "all devices"),
          r.filter && r.filter.group ? el("div", { class: "muted small" }, `group ${r.filter.group}`) : null,
          r.revert ? el("div", { class: "small" }, "revert") : null),
        el("td", { class: "col-stage" }, `${r.current_stage + 1} of ${r.stages.length}`,
          el("div", { class: "muted small" },
            r.stages.length > 1 ? `${stage ?? "?"} % (${r.stages.join(" → ")} %)` : `${stage ?? "?"} %`)),
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
