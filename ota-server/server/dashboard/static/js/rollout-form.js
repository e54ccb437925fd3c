// The form that creates a rollout, or a revert (`#/rollouts/new`, `#/rollouts/revert`, in view `rollout`): what
// `ota-server rollout create|revert` accepts, as fields: a published bundle, the target filter (tags, group,
// versions), stages and failure threshold, stage rules (soak, deadline), maintenance windows with a time zone,
// a start time, confirmation, guards and their watch time. It posts one CreateRolloutRequest to
// `POST /api/rollouts`; the server validates it (its message is shown as is). A revert takes a group (or tags)
// back to an earlier release and asks first.

let ctx;

export function mount(c) {
  ctx = c;
}

const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/** `k=v` per line (or comma) into an object; an error names the bad entry. */
function pairs(text) {
  const out = {};
  for (const part of text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i <= 0) throw new Error(`'${part}' is not key=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function field(label, input, hint) {
  const { el } = ctx;
  const id = input.id;
  return [el("label", { for: id }, label), input, hint ? el("p", { class: "hint" }, hint) : null].filter(Boolean);
}

function windowRow() {
  const { el } = ctx;
  const row = el("div", { class: "window-row" });
  for (const d of DAYS) row.append(el("label", { class: "day" }, el("input", { type: "checkbox", value: d, class: "w-day" }), d));
  row.append(el("input", { type: "time", class: "w-start", value: "01:00", "aria-label": "opens" }), " – ",
    el("input", { type: "time", class: "w-end", value: "05:00", "aria-label": "closes" }),
    el("button", { type: "button", class: "link-button", onclick: () => row.remove() }, "remove"));
  return row;
}

function guardRow() {
  const { el } = ctx;
  const row = el("div", { class: "guard-row" });
  row.append(
    el("input", { type: "text", class: "g-metric", placeholder: "metric, e.g. inference_latency_ms", "aria-label": "metric" }),
    el("select", { class: "g-stat", "aria-label": "statistic" }, ...["p95", "mean", "max"].map((s) => el("option", { value: s }, s))),
    el("select", { class: "g-kind", "aria-label": "bound" },
      el("option", { value: "increase" }, "rises more than % over not-yet-updated"),
      el("option", { value: "max" }, "exceeds")),
    el("input", { type: "number", class: "g-value", step: "any", placeholder: "20", "aria-label": "bound value" }),
    el("input", { type: "number", class: "g-min", min: "1", value: "1", "aria-label": "robots needed on each side" }),
    el("button", { type: "button", class: "link-button", onclick: () => row.remove() }, "remove"),
  );
  return row;
}

/** Shows the form in view `rollout` (a revert when `revert`). */
export async function show(revert) {
  const { el } = ctx;
  const node = ctx.clear(ctx.view("rollout"));
  if (!ctx.can("operator")) {
    node.append(el("p", { class: "error" }, "Creating rollouts needs the operator role."));
    return;
  }
  const bundle = el("select", { id: "f-bundle", required: true });
  const groupList = el("datalist", { id: "f-groups" });
  const windows = el("div", { class: "rows" });
  const guards = el("div", { class: "rows" });
  const error = el("p", { class: "error", role: "alert", id: "f-error" });
  const input = (id, attrs) => el("input", { id, type: "text", spellcheck: "false", ...attrs });
  const f = el("form", { class: "console", id: "rollout-form", novalidate: true });
  f.append(
    ...field(revert ? "Go back to" : "Bundle", bundle, revert ? "the release the robots return to" : "a published bundle"),
    ...field("Name", input("f-name", { placeholder: "optional" })),
    ...field("Group", input("f-group", { list: "f-groups", placeholder: revert ? "required (or tags)" : "any" })),
    groupList,
    ...field("Tags", el("textarea", { id: "f-tags", placeholder: "site=warehouse-3\nmodel=picker" }), "key=value per line; robots must carry all"),
  );
  if (!revert) f.append(...field("Versions", input("f-versions", { placeholder: ">=1.2, <2" }), "only robots running a version in this range"));
  f.append(
    ...field("Stages (%)", input("f-stages", { value: revert ? "100" : "5,25,100" }), "cumulative, ending at 100"),
    ...field("Failure threshold (%)", el("input", { id: "f-threshold", type: "number", min: "0", max: "100", step: "any", value: "20" }),
      "pauses when failed + rolled back exceed this share of offered robots"),
    ...field("Soak (minutes)", el("input", { id: "f-soak", type: "number", min: "0", value: "0" }), "a complete stage waits this long before the next"),
    ...field("Deadline (minutes)", el("input", { id: "f-deadline", type: "number", min: "0", value: "0" }), "silent robots stop blocking a stage after this long; 0: never"),
    el("label", {}, "Windows"),
    el("div", {}, windows, el("button", { type: "button", class: "secondary", id: "f-add-window", onclick: () => windows.append(windowRow()) }, "Add a window")),
    el("p", { class: "hint" }, "installs only inside these windows; none: the group's, else any time"),
    ...field("Time zone", input("f-timezone", { placeholder: "UTC" })),
    ...field("Start at", el("input", { id: "f-start", type: "datetime-local" }), "offer nothing before this time (your local time)"),
    ...field("Confirmation", el("input", { id: "f-confirm", type: "checkbox" }), "robots wait for ota-client approve before rebooting"),
    el("label", {}, "Guards"),
    el("div", {}, guards, el("button", { type: "button", class: "secondary", id: "f-add-guard", onclick: () => guards.append(guardRow()) }, "Add a guard")),
    el("p", { class: "hint" }, "a breach pauses the rollout"),
    ...field("Watch (minutes)", el("input", { id: "f-watch", type: "number", min: "0", value: "0" }), "guards keep watching this long after completion"),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", onclick: () => ctx.back() }, "Cancel"),
      el("button", { type: "submit", class: revert ? "danger" : "action", id: "f-submit" }, revert ? "Create revert" : "Create rollout")),
    error,
  );
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit(f, revert, error);
  });
  node.append(
    el("div", { class: "card-head" },
      el("button", { type: "button", class: "link-button back", onclick: () => ctx.back() }, "← Back"),
      el("h2", {}, revert ? "Revert a group" : "New rollout")),
    f,
  );
  try {
    const [bundles, groups] = await Promise.all([ctx.api.get("/api/bundles"), ctx.api.get("/api/groups")]);
    bundles.sort((a, b) => b.uploaded_at - a.uploaded_at);
    for (const b of bundles) {
      bundle.append(el("option", { value: b.bundle_id }, `${b.version} (${b.compatible}) · ${b.bundle_id.slice(0, 12)}`));
    }
    for (const g of groups) groupList.append(el("option", { value: g.name }, `${g.devices} robots`));
    if (!bundles.length) error.textContent = "No bundle is published yet: publish one first (ota-server bundles publish).";
  } catch (e) {
    error.textContent = e.message;
  }
}

const val = (f, id) => f.querySelector(`#${id}`).value.trim();
const minutes = (f, id) => Math.round(Number(val(f, id) || 0) * 60);

/** The CreateRolloutRequest the form says. */
function request(f, revert) {
  const stages = val(f, "f-stages").split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new Error(`stage '${s}' is not a whole percentage`);
    return n;
  });
  const tags = pairs(val(f, "f-tags"));
  const group = val(f, "f-group");
  const req = {
    bundle_id: val(f, "f-bundle"),
    stages,
    failure_threshold: Number(val(f, "f-threshold") || 20) / 100,
    filter: { tags, group: group || undefined },
    rules: { soak_secs: minutes(f, "f-soak"), deadline_secs: minutes(f, "f-deadline") },
    watch_secs: minutes(f, "f-watch"),
    require_confirmation: f.querySelector("#f-confirm").checked,
    revert,
    guards: [],
  };
  const name = val(f, "f-name");
  if (name) req.name = name;
  const versions = f.querySelector("#f-versions");
  if (versions && versions.value.trim()) req.filter.versions = versions.value.trim();
  const windows = [...f.querySelectorAll(".window-row")].map((row) => ({
    days: [...row.querySelectorAll(".w-day:checked")].map((c) => c.value),
    start: row.querySelector(".w-start").value,
    end: row.querySelector(".w-end").value,
  }));
  const timezone = val(f, "f-timezone");
  if (windows.length || timezone) req.schedule = { windows, ...(timezone ? { timezone } : {}) };
  const start = val(f, "f-start");
  if (start) req.start_at = Math.floor(new Date(start).getTime() / 1000);
  for (const row of f.querySelectorAll(".guard-row")) {
    const metric = row.querySelector(".g-metric").value.trim();
    if (!metric) continue;
    const value = Number(row.querySelector(".g-value").value);
    const g = { metric, stat: row.querySelector(".g-stat").value, min_robots: Number(row.querySelector(".g-min").value || 1) };
    if (row.querySelector(".g-kind").value === "max") g.max = value;
    else g.max_increase_percent = value;
    req.guards.push(g);
  }
  if (revert && !group && !Object.keys(tags).length) throw new Error("say which robots to take back: a group (or tags)");
  return req;
}

async function submit(f, revert, error) {
  error.textContent = "";
  let req;
  try {
    req = request(f, revert);
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  if (revert) {
    const who = req.filter.group ? `group ${req.filter.group}` : Object.entries(req.filter.tags).map(([k, v]) => `${k}=${v}`).join(", ");
    const label = f.querySelector("#f-bundle").selectedOptions[0]?.textContent || req.bundle_id;
    if (!(await ctx.confirm(`Take every robot of ${who} back to ${label}?`, "Revert"))) return;
  }
  try {
    const info = await ctx.api.post("/api/rollouts", req);
    ctx.toast(`Created rollout #${info.rollout_id} (${info.name})`);
    ctx.emit("rollout_updated", info);
    ctx.go(`#/rollout/${info.rollout_id}`);
  } catch (e) {
    error.textContent = e.message;
  }
}
