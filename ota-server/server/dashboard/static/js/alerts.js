// The alerts view (`#/alerts`) and the open-alert count beside "Alerts" in the header: what needs a person,
// most urgent first (GET /api/alerts). Each alert links to its robot (`#/robot/<id>`) or rollout
// (`#/rollout/<id>`); operators acknowledge one with its button (POST /api/alerts/<id>/ack), and everyone sees
// who did and when. Live: the server's `alerts_changed` event (and every reconnect) reloads the list. Messages
// name robots and rollouts, which are stored text: they only ever reach the page through textContent (ctx.el).

const SEVERITY_CLASS = { critical: "st-failure", warning: "st-rolled_back", info: "st-pending" };
const KIND_LABEL = {
  rollout_paused: "rollout paused",
  rolled_back: "rolled back",
  offline: "offline",
  waiting: "waiting",
  maintenance_due: "maintenance due",
  freeze_alarm: "freeze alarm",
  pending_admission: "pending admission",
};

export function mount(ctx) {
  const { el, clear } = ctx;
  const state = { alerts: [], loading: null };
  const root = ctx.view("alerts");
  root.setAttribute("aria-labelledby", "alerts-title");

  const link = document.querySelector('nav.views a[data-route="alerts"]');
  const count = el("span", { class: "badge alert-count", id: "alert-count", hidden: true }, "");
  if (link) link.append(" ", count);

  const body = el("tbody", { id: "alert-rows" });
  const empty = el("p", { class: "empty", id: "no-alerts", hidden: true }, "Nothing needs a person right now.");
  root.append(
    el("div", { class: "card-head" }, el("h2", { id: "alerts-title" }, "Alerts"),
      el("span", { class: "muted", id: "alerts-summary" })),
    el("div", { class: "table-scroll" },
      el("table", { class: "grid alerts" },
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Severity"),
          el("th", { scope: "col" }, "Kind"),
          el("th", { scope: "col" }, "Target"),
          el("th", { scope: "col" }, "Since"),
          el("th", { scope: "col" }, "What"),
          el("th", { scope: "col" }, "Acknowledged"))),
        body)),
    empty,
  );

  function targetLink(a) {
    const t = a.target;
    const label = t.type === "rollout" ? `rollout ${t.id}` : `robot ${t.id}`;
    const hash = t.type === "rollout" ? `#/rollout/${encodeURIComponent(t.id)}` : `#/robot/${encodeURIComponent(t.id)}`;
    return el("a", { href: hash, class: "alert-target" }, label);
  }

  async function ack(a, button) {
    button.disabled = true;
    try {
      await ctx.api.post(`/api/alerts/${encodeURIComponent(a.id)}/ack`);
      ctx.toast(`Acknowledged: ${a.message}`);
      await load();
    } catch (e) {
      button.disabled = false;
      ctx.toast(e.message, "error");
    }
  }

  function ackCell(a) {
    if (a.acknowledged) {
      return el("td", { class: "acked", title: ctx.fmt.absolute(a.acknowledged.at) },
        `${a.acknowledged.by}, ${ctx.fmt.ago(a.acknowledged.at)}`);
    }
    if (!ctx.can("operator")) return el("td", { class: "muted" }, "no");
    const button = el("button", { type: "button", class: "action ack", "data-alert": a.id }, "Acknowledge");
    button.addEventListener("click", () => ack(a, button));
    return el("td", {}, button);
  }

  function render() {
    clear(body);
    for (const a of state.alerts) {
      body.append(el("tr", { "data-alert": a.id, class: `alert-${a.severity}` },
        el("td", {}, el("span", { class: `badge ${SEVERITY_CLASS[a.severity] || ""}` }, a.severity)),
        el("td", {}, KIND_LABEL[a.kind] || a.kind),
        el("td", {}, targetLink(a)),
        el("td", { title: ctx.fmt.absolute(a.since) }, ctx.fmt.ago(a.since)),
        el("td", { class: "alert-message" }, a.message),
        ackCell(a)));
    }
    empty.hidden = state.alerts.length > 0;
    const open = state.alerts.filter((a) => !a.acknowledged).length;
    // Empty rather than hidden at 0: the badge's CSS display would override the hidden attribute.
    count.textContent = open ? String(open) : "";
    count.hidden = open === 0;
    if (link) link.setAttribute("aria-label", `Alerts (${open} not acknowledged)`);
    document.getElementById("alerts-summary").textContent =
      `${state.alerts.length} open, ${open} not acknowledged`;
  }

  async function load() {
    if (!ctx.me) return;
    // One request at a time; a change during it loads again after.
    if (state.loading) {
      state.again = true;
      return state.loading;
    }
    state.loading = (async () => {
      try {
        state.alerts = await ctx.api.get("/api/alerts");
        render();
      } catch (e) {
        console.warn("alerts:", e);
      } finally {
        state.loading = null;
        if (state.again) {
          state.again = false;
          load();
        }
      }
    })();
    return state.loading;
  }

  ctx.on("resync", load);
  ctx.on("signin", load);
  ctx.on("alerts_changed", load);
  ctx.on("route", (r) => {
    if (r.name === "alerts") load();
  });
}
