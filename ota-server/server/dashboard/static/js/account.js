// Accounts in the console (team.md "account.js"): the user-and-password sign-in beside the token form, the
// user menu's link to the caller's account, and the view `#/admin`: users and their roles (admins), the
// caller's password and API tokens (a new token's secret is shown once), and the audit trail (admins).
// Everything goes through the documented API (/api/login, /api/me/password, /api/users, /api/tokens,
// /api/audit); text only ever reaches the page through ctx.el (textContent).
const ROLES = ["viewer", "operator", "admin"];
/** Who the bootstrap admin token acts as: no password, no API tokens. */
const BOOTSTRAP_USER = "admin-token";
const AUDIT_PAGE = 50;

let ctx = null;
/** The audit page being shown: ids below `before` (null: the newest). */
let auditBefore = null;

/** POST /api/login without a token (ctx.api would send the stale one and sign out on the 401). */
async function login(username, password) {
  const res = await fetch("/api/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
    cache: "no-store",
  });
  let body = {};
  try {
    body = await res.json();
  } catch {
    body = {};
  }
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function mountSignIn() {
  const { el } = ctx;
  const section = document.getElementById("login");
  const tokenForm = document.getElementById("login-form");
  const username = el("input", { id: "username", name: "username", autocomplete: "username", required: true, spellcheck: "false" });
  const password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = el("form", { id: "password-form", class: "password-form" },
    el("label", { for: "username" }, "User name"), username,
    el("label", { for: "password" }, "Password"), password,
    el("button", { type: "submit", id: "password-submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = document.getElementById("login-error");
    error.textContent = "";
    try {
      const session = await login(username.value.trim(), password.value);
      form.reset();
      await ctx.signIn(session.token, session.user);
    } catch (e) {
      password.value = "";
      error.textContent = e.message;
      password.focus();
    }
  });
  section.insertBefore(form, tokenForm);
  section.insertBefore(el("p", { class: "muted or-token" }, "…or paste an API token (or, before the first user exists, the server's admin token):"), tokenForm);
}

function mountUserMenu() {
  const right = document.querySelector(".topbar-right");
  const logout = document.getElementById("logout");
  const link = ctx.el("a", { id: "account-link", href: "#/admin", hidden: true }, "Account");
  right.insertBefore(link, logout);
  ctx.on("signin", () => {
    link.hidden = false;
  });
  ctx.on("signout", () => {
    link.hidden = true;
    ctx.clear(ctx.view("admin"));
    auditBefore = null;
  });
}

// ---------- the admin view ----------

function section(id, title, ...children) {
  return ctx.el("section", { id, class: "admin-part", "aria-labelledby": `${id}-title` },
    ctx.el("h2", { id: `${id}-title` }, title), ...children);
}

function failed(e) {
  ctx.toast(e.message, "error");
}

async function usersPart() {
  const { el, api } = ctx;
  const users = await api.get("/api/users");
  const rows = users.map((u) => {
    const select = el("select", { "aria-label": `Role of ${u.name}`, "data-user": u.name, class: "role-select" },
      ...ROLES.map((r) => el("option", { value: r, selected: r === u.role }, r)));
    select.addEventListener("change", async () => {
      try {
        await api.put(`/api/users/${encodeURIComponent(u.name)}/role`, { role: select.value });
        ctx.toast(`${u.name} is now ${select.value}`);
      } catch (e) {
        failed(e);
      }
      render();
    });
    const remove = el("button", { type: "button", class: "danger small", "data-remove": u.name }, "Remove");
    remove.addEventListener("click", async () => {
      if (!(await ctx.confirm(`Remove user ${u.name}? Their sessions and API tokens stop working.`, "Remove"))) return;
      try {
        await api.del(`/api/users/${encodeURIComponent(u.name)}`);
        ctx.toast(`removed ${u.name}`);
      } catch (e) {
        failed(e);
      }
      render();
    });
    return el("tr", { "data-user-row": u.name }, el("td", {}, u.name), el("td", {}, select),
      el("td", {}, ctx.fmt.absolute(u.created_at)), el("td", {}, remove));
  });
  const name = el("input", { id: "new-user-name", required: true, spellcheck: "false", autocomplete: "off" });
  const role = el("select", { id: "new-user-role" }, ...ROLES.map((r) => el("option", { value: r }, r)));
  const password = el("input", { id: "new-user-password", type: "password", required: true, minlength: "12", autocomplete: "new-password" });
  const form = el("form", { id: "add-user-form", class: "console" },
    el("label", { for: "new-user-name" }, "New user"), name,
    el("label", { for: "new-user-role" }, "Role"), role,
    el("label", { for: "new-user-password" }, "Password"), password,
    el("p", { class: "hint" }, "At least 12 characters; they can use it at once."),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "add-user" }, "Add user")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api.post("/api/users", { name: name.value.trim(), role: role.value, password: password.value });
      ctx.toast(`added ${name.value.trim()} (${role.value})`);
      render();
    } catch (e) {
      failed(e);
    }
  });
  return section("users", "Users",
    el("table", { class: "grid", id: "users-table" },
      el("thead", {}, el("tr", {}, ...["User", "Role", "Added", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)),
    form);
}

/** The caller's own password: the current one proves it is them; the answer is a new session (the others end). */
function passwordPart() {
  const { el, api } = ctx;
  const input = (id, autocomplete) =>
    el("input", { id, type: "password", required: true, autocomplete, ...(autocomplete === "new-password" ? { minlength: "12" } : {}) });
  const current = input("current-password", "current-password");
  const fresh = input("new-password", "new-password");
  const again = input("new-password-again", "new-password");
  const form = el("form", { id: "change-password-form", class: "console" },
    el("label", { for: "current-password" }, "Current password"), current,
    el("label", { for: "new-password" }, "New password"), fresh,
    el("label", { for: "new-password-again" }, "Again"), again,
    el("p", { class: "hint" }, "At least 12 characters. Your other sessions end; API tokens keep working."),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "change-password" }, "Change password")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (fresh.value !== again.value) {
      ctx.toast("the two new passwords differ; nothing changed", "error");
      return;
    }
    try {
      const session = await api.put("/api/me/password", { current: current.value, password: fresh.value });
      form.reset();
      await ctx.signIn(session.token, session.user);
      ctx.toast("password changed; your other sessions ended");
    } catch (e) {
      current.value = "";
      failed(e);
    }
  });
  return section("password", "Your password", form);
}

async function tokensPart() {
  const { el, api } = ctx;
  if (ctx.me.name === BOOTSTRAP_USER) {
    return section("tokens", "API tokens",
      el("p", { class: "muted" }, "The bootstrap admin token has no API tokens: add a user (above, or `ota-server users add`) and sign in as them."));
  }
  const tokens = await api.get("/api/tokens");
  const rows = tokens.map((t) => {
    const revoke = el("button", { type: "button", class: "danger small", "data-revoke": t.id }, "Revoke");
    revoke.addEventListener("click", async () => {
      if (!(await ctx.confirm(`Revoke the API token ${t.name}? Whatever uses it stops working.`, "Revoke"))) return;
      try {
        await api.del(`/api/tokens/${encodeURIComponent(t.id)}`);
        ctx.toast(`revoked ${t.name}`);
      } catch (e) {
        failed(e);
      }
      render();
    });
    return el("tr", { "data-token-row": t.id }, el("td", {}, t.name), el("td", { class: "mono" }, t.id),
      el("td", {}, ctx.fmt.absolute(t.created_at)), el("td", {}, ctx.fmt.ago(t.last_used)),
      el("td", {}, t.expires_at ? ctx.fmt.absolute(t.expires_at) : "never"), el("td", {}, revoke));
  });
  const name = el("input", { id: "new-token-name", required: true, spellcheck: "false", autocomplete: "off", placeholder: "ci, laptop…" });
  const days = el("input", { id: "new-token-days", type: "number", min: "1", placeholder: "never" });
  const secret = el("div", { id: "new-token", class: "secret", hidden: true });
  const form = el("form", { id: "create-token-form", class: "console" },
    el("label", { for: "new-token-name" }, "New token"), name,
    el("label", { for: "new-token-days" }, "Expires in days"), days,
    el("p", { class: "hint" }, "Empty: until revoked."),
    el("div", { class: "actions" }, el("button", { type: "submit", id: "create-token" }, "Create token")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: name.value.trim() };
    if (days.value) body.expires_in_secs = Math.round(Number(days.value) * 86400);
    try {
      const created = await api.post("/api/tokens", body);
      await render();
      // Shown this once: the server keeps only its hash.
      const box = document.getElementById("new-token");
      ctx.clear(box).append(
        el("p", {}, `Token ${created.info.name}: copy it now, it is not shown again.`),
        el("code", { id: "new-token-secret" }, created.token));
      box.hidden = false;
    } catch (e) {
      failed(e);
    }
  });
  return section("tokens", "Your API tokens",
    el("p", { class: "muted" }, "For the CLI and CI: `--token` or OTA_ADMIN_TOKEN. They act as you, with your role."),
    el("table", { class: "grid", id: "tokens-table" },
      el("thead", {}, el("tr", {}, ...["Name", "Id", "Created", "Last used", "Expires", ""].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows)),
    form, secret);
}

async function auditPart() {
  const { el, api } = ctx;
  const query = `?limit=${AUDIT_PAGE}${auditBefore ? `&before=${auditBefore}` : ""}`;
  const page = await api.get(`/api/audit${query}`);
  const rows = page.entries.map((e) => el("tr", { "data-audit-id": String(e.id) },
    el("td", {}, ctx.fmt.absolute(e.at)), el("td", { class: "audit-user" }, e.user),
    el("td", { class: "audit-action" }, e.action), el("td", {}, e.target), el("td", {}, e.address),
    el("td", { class: e.status >= 400 ? "num bad" : "num" }, String(e.status))));
  const newest = el("button", { type: "button", class: "secondary small", id: "audit-newest", hidden: !auditBefore }, "Newest");
  newest.addEventListener("click", () => {
    auditBefore = null;
    render();
  });
  const older = el("button", { type: "button", class: "secondary small", id: "audit-older", hidden: !page.next_before }, "Older");
  older.addEventListener("click", () => {
    auditBefore = page.next_before;
    render();
  });
  return section("audit", "Audit trail",
    el("p", { class: "muted" }, "Every change made with a user's token (refused ones too) and every sign-in, newest first."),
    el("div", { class: "table-scroll" }, el("table", { class: "grid", id: "audit-table" },
      el("thead", {}, el("tr", {}, ...["When", "Who", "What", "Target", "From", "Status"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...rows))),
    el("p", { class: "empty", hidden: rows.length > 0 }, "Nothing yet."),
    el("div", { class: "actions" }, newest, older));
}

let rendering = null;

/** Draws `#/admin` for the signed-in user (the parts their role may see). */
async function render() {
  if (!ctx.me || ctx.route.name !== "admin") return;
  const mine = (rendering = Symbol("render"));
  const parts = [];
  try {
    if (ctx.can("admin")) parts.push(await usersPart());
    if (ctx.me.name !== BOOTSTRAP_USER) parts.push(passwordPart());
    parts.push(await tokensPart());
    if (ctx.can("admin")) parts.push(await auditPart());
  } catch (e) {
    parts.push(ctx.el("p", { class: "error" }, e.message));
  }
  if (mine !== rendering) return; // a newer render started meanwhile
  const view = ctx.clear(ctx.view("admin"));
  view.append(ctx.el("h1", { class: "visually-hidden" }, "Accounts"), ...parts);
}

export function mount(c) {
  ctx = c;
  mountSignIn();
  mountUserMenu();
  ctx.on("route", (route) => {
    if (route.name === "admin") render();
  });
}
