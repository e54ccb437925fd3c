// The map view (`#/map`, team.md): one tab per site, the site's plan drawn on a canvas with its robots as dots
// coloured by status (the fleet table's colours), a robot's id on hover, a click opens the robot; live. Operators
// upload plans (PNG or JPEG with a scale in metres per pixel and the origin's pixel) and delete them.
//
// Where a robot is drawn is the server's business (GET /api/sites/{name}/robots answers pixels, from the robots'
// `telemetry.position` whose `frame` names the site): the page only draws. A poll that moves a robot, a report
// and a deletion arrive as events; the view fetches the site's robots again, at most every REFRESH_MS.
//
// For tests and screen readers: the canvas carries `data-site` and `data-robots` (dots drawn); a visually hidden
// list names each robot with its `data-x`/`data-y` pixel on the plan.

const REFRESH_MS = 250;
const DOT = 6; // dot radius, CSS pixels
const STATUS_VAR = {
  success: "--ok", failure: "--bad", rolled_back: "--warn",
  downloading: "--info", installing: "--info", rebooting: "--info", staged: "--info",
};

let ctx;
let parts = null;
const state = {
  sites: [], // SiteInfo
  current: null, // site name shown
  site: null, // its SiteInfo (from the robots answer)
  robots: [], // PlacedRobot
  drawn: new Set(), // ids on the current plan
  plan: null, // {digest, bitmap}
  timer: 0,
  inflight: false,
  again: false,
  hover: null,
};

function visible() {
  return ctx.route && ctx.route.name === "map" && ctx.me;
}

export function mount(c) {
  ctx = c;
  ctx.on("route", (route) => {
    if (route.name === "map") open();
  });
  ctx.on("resync", () => {
    if (visible()) loadSites();
  });
  ctx.on("device_updated", (d) => {
    if (!visible() || !state.current) return;
    const frame = d.telemetry && d.telemetry.position && d.telemetry.position.frame;
    if (frame === state.current || state.drawn.has(d.device_id)) soon();
  });
  ctx.on("report", ({ device_id: id }) => {
    if (visible() && state.drawn.has(id)) soon();
  });
  ctx.on("device_deleted", ({ device_id: id }) => {
    if (visible() && state.drawn.has(id)) soon();
  });
  window.addEventListener("resize", () => {
    if (visible()) draw();
  });
}

function colour(status) {
  const v = STATUS_VAR[status] || "--muted";
  return getComputedStyle(document.documentElement).getPropertyValue(v).trim() || "#5d6b7a";
}

function build() {
  const { el } = ctx;
  const node = ctx.view("map");
  ctx.clear(node);
  const canvas = el("canvas", {
    id: "map-canvas", class: "map-canvas", role: "img", "aria-label": "Site plan with robots", "data-site": "",
    "data-robots": "0", style: { width: "100%", display: "block", cursor: "default", touchAction: "manipulation" },
  });
  parts = {
    tabs: el("div", { class: "map-tabs", role: "tablist", "aria-label": "Sites" }),
    status: el("p", { id: "map-status", class: "muted" }, "Loading sites…"),
    canvas,
    tip: el("div", { id: "map-tip", class: "map-tip", role: "tooltip", hidden: true,
      style: { position: "absolute", pointerEvents: "none", background: "#17212d", color: "#fff", padding: "2px 6px",
        borderRadius: "4px", fontSize: "12px", whiteSpace: "nowrap" } }),
    list: el("ul", { id: "map-robots", class: "visually-hidden" }),
    legend: el("p", { class: "legend map-legend" }),
    remove: el("button", { id: "site-delete", type: "button", class: "secondary", hidden: true, onclick: removeSite },
      "Delete site"),
    form: ctx.can("operator") ? uploadForm() : null,
  };
  for (const [label, status] of [["success", "success"], ["in progress", "installing"], ["failed", "failure"],
    ["rolled back", "rolled_back"], ["no report", null]]) {
    parts.legend.append(el("span", {},
      el("span", { class: "swatch", style: { background: colour(status), display: "inline-block", width: "10px",
        height: "10px", borderRadius: "50%" } }), ` ${label} `));
  }
  node.append(
    el("div", { class: "card-head" }, el("h2", {}, "Map"), parts.tabs, parts.remove),
    parts.status,
    el("div", { class: "map-wrap", style: { position: "relative" } }, canvas, parts.tip),
    parts.legend,
    parts.list,
    parts.form,
  );
  canvas.addEventListener("mousemove", (ev) => hover(ev));
  canvas.addEventListener("mouseleave", () => {
    parts.tip.hidden = true;
    state.hover = null;
  });
  canvas.addEventListener("click", (ev) => {
    const r = nearest(ev);
    if (r) ctx.go(`#/robot/${encodeURIComponent(r.device_id)}`);
  });
}

function uploadForm() {
  const { el } = ctx;
  const field = (label, attrs) => el("label", { class: "field", style: { display: "flex", flexDirection: "column",
    gap: "2px", fontSize: "13px" } }, label, el("input", attrs));
  const error = el("p", { id: "site-error", class: "error", role: "alert" });
  const form = el("form", { id: "site-form", class: "site-form", style: { display: "grid", gap: "8px 12px",
    gridTemplateColumns: "repeat(auto-fill, minmax(190px, 1fr))", alignItems: "end", marginTop: "12px" } },
    el("h3", { style: { gridColumn: "1 / -1", margin: "0" } }, "Add or replace a site"),
    field("Name", { id: "site-name", name: "name", required: true, maxlength: "64",
      placeholder: "hall-a", spellcheck: "false" }),
    field("Plan (PNG or JPEG, ≤ 10 MiB)", { id: "site-file", name: "file", type: "file", required: true,
      accept: "image/png,image/jpeg" }),
    field("Scale (m per pixel)", { id: "site-scale", name: "scale", type: "number", step: "any", min: "0.0001",
      required: true, value: "0.05" }),
    field("Origin x (px)", { id: "site-origin-x", name: "origin_x", type: "number", step: "any", value: "0" }),
    field("Origin y (px)", { id: "site-origin-y", name: "origin_y", type: "number", step: "any", value: "0" }),
    el("div", {}, el("button", { type: "submit" }, "Upload")),
    el("p", { class: "muted", style: { gridColumn: "1 / -1", margin: "0" } }, "Robots on this site report telemetry.position with frame set to its name, x and y " +
      "in metres from the origin (x to the right, y up the plan)."),
    el("div", { style: { gridColumn: "1 / -1" } }, error));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    const file = form.querySelector("#site-file").files[0];
    if (!file) return;
    const name = value("site-name");
    const q = new URLSearchParams({ name, scale: value("site-scale"), origin_x: value("site-origin-x") || "0",
      origin_y: value("site-origin-y") || "0" });
    try {
      await ctx.api.upload(`/api/sites?${q}`, file);
      ctx.toast(`Site ${name} saved`);
      form.reset();
      state.current = name;
      await loadSites();
    } catch (e) {
      error.textContent = e.message;
    }
  });
  return form;
}

async function open() {
  if (!parts || !parts.canvas.isConnected) build();
  await loadSites();
}

async function loadSites() {
  try {
    state.sites = await ctx.api.get("/api/sites");
  } catch (e) {
    parts.status.hidden = false;
    parts.status.textContent = `Could not load the sites: ${e.message}`;
    return;
  }
  if (!state.sites.some((s) => s.name === state.current)) state.current = state.sites.length ? state.sites[0].name : null;
  renderTabs();
  parts.remove.hidden = !(state.current && ctx.can("operator"));
  if (!state.current) {
    parts.status.hidden = false;
    parts.status.textContent = ctx.can("operator")
      ? "No sites yet: upload a plan below."
      : "No sites yet: an operator uploads the plans.";
    state.robots = [];
    state.site = null;
    draw();
    return;
  }
  await refresh();
}

function renderTabs() {
  const { el } = ctx;
  ctx.clear(parts.tabs);
  for (const s of state.sites) {
    const on = s.name === state.current;
    parts.tabs.append(el("button", {
      type: "button", role: "tab", class: `tab${on ? " active" : ""}`, "aria-selected": on ? "true" : "false",
      "data-site": s.name,
      onclick: () => {
        state.current = s.name;
        renderTabs();
        refresh();
      },
    }, s.name));
  }
}

function soon() {
  if (state.timer) return;
  state.timer = setTimeout(() => {
    state.timer = 0;
    refresh();
  }, REFRESH_MS);
}

/** Fetches the current site's robots (and its plan when it changed), then draws. One request at a time. */
async function refresh() {
  if (state.inflight) {
    state.again = true;
    return;
  }
  state.inflight = true;
  const name = state.current;
  try {
    const answer = await ctx.api.get(`/api/sites/${encodeURIComponent(name)}/robots`);
    if (name !== state.current) return;
    if (!state.plan || state.plan.digest !== answer.site.digest) {
      const blob = await ctx.api.get(`/api/sites/${encodeURIComponent(name)}/image`);
      state.plan = { digest: answer.site.digest, bitmap: await createImageBitmap(blob) };
    }
    state.site = answer.site;
    state.robots = answer.robots;
    state.drawn = new Set(answer.robots.map((r) => r.device_id));
    parts.status.hidden = true;
    draw();
  } catch (e) {
    parts.status.hidden = false;
    parts.status.textContent = `Could not load site ${name}: ${e.message}`;
  } finally {
    state.inflight = false;
    if (state.again) {
      state.again = false;
      soon();
    }
  }
}

/** The plan's scale on screen (CSS pixels per plan pixel). */
function zoom() {
  const width = parts.canvas.clientWidth || parts.canvas.parentNode.clientWidth || 800;
  return state.site ? Math.min(width / state.site.width, 1) : 1;
}

function draw() {
  const { canvas, list } = parts;
  const site = state.site;
  canvas.setAttribute("data-site", site ? site.name : "");
  canvas.setAttribute("data-robots", String(site ? state.robots.length : 0));
  ctx.clear(list);
  if (!site || !state.plan) {
    canvas.hidden = true;
    return;
  }
  canvas.hidden = false;
  const k = zoom();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(site.width * k);
  const h = Math.round(site.height * k);
  canvas.style.height = `${h}px`;
  canvas.style.width = `${w}px`;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.drawImage(state.plan.bitmap, 0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "middle";
  const label = state.robots.length <= 40;
  for (const r of state.robots) {
    const x = r.x * k;
    const y = r.y * k;
    const c = colour(r.status);
    g.beginPath();
    g.arc(x, y, DOT, 0, 2 * Math.PI);
    if (r.outside) {
      g.lineWidth = 2.5;
      g.strokeStyle = c;
      g.stroke();
    } else {
      g.fillStyle = c;
      g.fill();
      g.lineWidth = 1.5;
      g.strokeStyle = "#ffffff";
      g.stroke();
    }
    if (label || state.hover === r.device_id) {
      g.fillStyle = "rgba(255,255,255,0.8)";
      const tw = g.measureText(r.device_id).width;
      g.fillRect(x + DOT + 2, y - 7, tw + 4, 14);
      g.fillStyle = "#17212d";
      g.fillText(r.device_id, x + DOT + 4, y);
    }
    list.append(ctx.el("li", { "data-device-id": r.device_id, "data-x": r.x.toFixed(1), "data-y": r.y.toFixed(1) },
      `${r.device_id}: ${r.status ? ctx.fmt.STATUS_LABEL[r.status] || r.status : "no report"}` +
      `${r.outside ? " (off the plan)" : ""}`));
  }
}

function nearest(ev) {
  const rect = parts.canvas.getBoundingClientRect();
  const k = zoom();
  const mx = ev.clientX - rect.left;
  const my = ev.clientY - rect.top;
  let best = null;
  let bestD = (DOT + 4) ** 2;
  for (const r of state.robots) {
    const d = (r.x * k - mx) ** 2 + (r.y * k - my) ** 2;
    if (d <= bestD) {
      best = r;
      bestD = d;
    }
  }
  return best;
}

function hover(ev) {
  const r = nearest(ev);
  parts.canvas.style.cursor = r ? "pointer" : "default";
  if (!r) {
    parts.tip.hidden = true;
    state.hover = null;
    return;
  }
  const k = zoom();
  parts.tip.hidden = false;
  parts.tip.textContent = `${r.device_id}${r.version ? ` · ${r.version}` : ""}${r.status ? ` · ${ctx.fmt.STATUS_LABEL[r.status] || r.status}` : ""}`;
  parts.tip.style.left = `${r.x * k + DOT + 6}px`;
  parts.tip.style.top = `${r.y * k - 24}px`;
  if (state.hover !== r.device_id) {
    state.hover = r.device_id;
    draw();
  }
}

async function removeSite() {
  const name = state.current;
  if (!name || !(await ctx.confirm(`Delete site ${name} and its plan? Robots keep reporting their positions.`, "Delete"))) {
    return;
  }
  try {
    await ctx.api.del(`/api/sites/${encodeURIComponent(name)}`);
    ctx.toast(`Site ${name} deleted`);
    state.current = null;
    state.plan = null;
    await loadSites();
  } catch (e) {
    ctx.toast(e.message, "error");
  }
}
