// The console's entry: mounts every page module on the shared `ctx` (team.md), routes `#/...` fragments to
// views, wires the token sign-in form and the header. Plain ES modules, no build step, no framework.
//
// Routes: `#/` fleet and rollouts · `#/rollout/<id>` a rollout and its robots · `#/robot/<id>` a robot ·
// `#/rollouts/new` and `#/rollouts/revert` the rollout form · `#/alerts` · `#/map` · `#/admin` (views of the other modules).

import ctx from "./ctx.js";
import * as fleet from "./fleet.js";
import * as rollouts from "./rollouts.js";
import * as robot from "./robot.js";
import * as account from "./account.js";
import * as alerts from "./alerts.js";
import * as map from "./map.js";

/** Which views each route shows (the others are hidden). */
const LAYOUT = {
  fleet: ["rollouts", "fleet"],
  robot: ["rollouts", "fleet", "robot"],
  rollout: ["rollout", "fleet"],
  "new-rollout": ["rollout"],
  alerts: ["alerts"],
  map: ["map"],
  admin: ["admin"],
};
const VIEWS = ["rollouts", "rollout", "fleet", "robot", "alerts", "map", "admin"];

/** `#/robot/a%2Fb` → {name: "robot", id: "a/b"}; anything unknown is the fleet. */
function parse(hash) {
  const [path] = hash.replace(/^#\/?/, "").split("?");
  const [head, ...rest] = path.split("/");
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  if (head === "rollouts" && (id === "new" || id === "revert")) return { name: "new-rollout", id };
  if ((head === "robot" || head === "rollout") && id) return { name: head, id };
  if (LAYOUT[head]) return { name: head, id: null };
  return { name: "fleet", id: null };
}

let listHash = "#/"; // the last list a robot can be opened from (the fleet or a rollout's robots)

function route() {
  const hash = location.hash;
  ctx.route = parse(hash);
  if (ctx.route.name === "fleet" || ctx.route.name === "rollout") listHash = hash || "#/";
  ctx.parent = ctx.route.name === "robot" ? listHash : "#/";
  const shown = new Set(LAYOUT[ctx.route.name]);
  for (const name of VIEWS) ctx.view(name).hidden = !shown.has(name);
  document.body.dataset.route = ctx.route.name;
  for (const a of document.querySelectorAll("nav.views a")) {
    const on = a.getAttribute("data-route") === ctx.route.name;
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (ctx.me) ctx.emit("route", ctx.route);
}

// The header's one-line summary: each module owns a part.
const SUMMARY_ORDER = ["devices", "rollouts", "health"];
const summary = new Map();
ctx.on("summary", ({ key, text }) => {
  summary.set(key, text);
  const keys = [...SUMMARY_ORDER, ...[...summary.keys()].filter((k) => !SUMMARY_ORDER.includes(k))];
  document.getElementById("summary").textContent = keys.map((k) => summary.get(k)).filter(Boolean).join(" · ");
});

ctx.on("signin", (me) => {
  document.getElementById("admin-link").hidden = !ctx.can("admin");
  document.getElementById("whoami").textContent = `${me.name} (${me.role})`;
  route();
});

function init() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  let token = null;
  if (m) {
    token = decodeURIComponent(m[1]);
    history.replaceState(null, "", location.pathname + location.search); // drop the token from the URL
  }
  for (const module of [fleet, rollouts, robot, account, alerts, map]) module.mount(ctx);
  window.addEventListener("hashchange", route);
  document.getElementById("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token-input");
    const value = input.value.trim();
    if (value) {
      input.value = "";
      ctx.signIn(value);
    }
  });
  document.getElementById("logout").addEventListener("click", () => {
    ctx.api.post("/api/logout").catch(() => {}).finally(() => ctx.signOut(""));
  });
  const [stored, user] = ctx.stored();
  if (token) ctx.signIn(token);
  else if (stored) ctx.signIn(stored, user);
  else ctx.signOut("");
}

init();
