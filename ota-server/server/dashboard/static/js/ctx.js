// The console's shared context (team.md "ctx"): the one API client (bearer token, JSON, one-line errors), who is
// signed in and what they may do, the live event stream, DOM building that only ever sets text, a confirmation
// dialog, navigation, views and toasts. main.js hands this object to every page module.
//
// * Token: a session token from account.js's login, or a pasted API/bootstrap token (the sign-in form, or
//   `#token=...` in the URL fragment, which never reaches the server's logs); kept in sessionStorage (this tab
//   only) and sent as `Authorization: Bearer <token>`. Never a cookie, so there is no CSRF surface.
// * Live events: GET /api/events is read with fetch() + a stream reader (EventSource cannot send an Authorization
//   header). On every (re)connect `resync` handlers run (each module reloads its snapshot) after the stream is
//   open and before the events queued meanwhile are applied, so nothing in between is missed; reconnects back
//   off 0.5 s → 15 s with jitter.
// * Stored text (tags, names, reasons, log tails: everything a robot or a user typed) only reaches the page
//   through textContent; `el` has no way to set HTML, and no module parses markup (assets.rs tests that).

const TOKEN_KEY = "ota-admin-token";
const USER_KEY = "ota-user";
const ROLES = ["viewer", "operator", "admin"];
const $ = (id) => document.getElementById(id);

/** A 401: the token is wrong or expired; the page signs out. */
export class AuthError extends Error {}

const handlers = new Map(); // event name -> Set of fns
const live = { token: null, stream: null, ready: false, queued: [], backoff: 500 };

// ---------- DOM (text only) ----------

/**
 * Builds an element. `attrs`: `class`, `text` (textContent), `style` (an object set through the CSSOM: the CSP
 * forbids style attributes), `on<event>` (a function), anything else through setAttribute. `href` must be a
 * fragment or a same-origin path. Children are nodes or strings (text nodes); null/false are skipped.
 */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v);
    else if (k.startsWith("on")) {
      if (typeof v !== "function") throw new TypeError(`${k} must be a function`);
      node.addEventListener(k.slice(2), v);
    } else if (k === "href" && !/^[#/]/.test(String(v))) throw new TypeError(`refusing link ${v}`);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

// ---------- formatting, shared by every module ----------

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

function tagChips(tags) {
  const wrap = el("span", { class: "tags" });
  for (const [k, v] of Object.entries(tags || {})) wrap.append(el("span", { class: "tag" }, `${k}=${v}`));
  return wrap;
}

// ---------- events ----------

function on(name, fn) {
  if (!handlers.has(name)) handlers.set(name, new Set());
  handlers.get(name).add(fn);
  return () => handlers.get(name).delete(fn);
}

/** Calls every handler of `name`; returns their results (promises are awaited by the caller that needs it). */
function emit(name, data) {
  const out = [];
  for (const fn of handlers.get(name) || []) {
    try {
      out.push(fn(data));
    } catch (e) {
      console.error(`${name} handler:`, e);
    }
  }
  return out;
}

// ---------- API ----------

async function errorText(res) {
  try {
    const body = await res.json();
    return body.error || `HTTP ${res.status}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

async function request(method, path, body, raw) {
  const headers = { Authorization: `Bearer ${live.token}` };
  const init = { method, headers, cache: "no-store" };
  if (raw !== undefined) {
    init.body = raw;
    headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    const message = await errorText(res);
    ctx.signOut(`Token rejected: ${message}`);
    throw new AuthError(message);
  }
  if (!res.ok) throw new Error(await errorText(res));
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.blob();
}

const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body ?? {}),
  put: (path, body) => request("PUT", path, body ?? {}),
  del: (path) => request("DELETE", path),
  upload: (path, file) => request("POST", path, undefined, file),
};

// ---------- event stream ----------

function setConn(kind, text) {
  const c = $("conn");
  c.className = `conn conn-${kind}`;
  c.textContent = text;
}

async function resync() {
  await Promise.all(emit("resync"));
}

async function connect() {
  if (live.stream) live.stream.abort();
  const controller = new AbortController();
  live.stream = controller;
  live.ready = false;
  live.queued = [];
  setConn("wait", "connecting…");
  try {
    const res = await fetch("/api/events", {
      headers: { Authorization: `Bearer ${live.token}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (res.status === 401 || res.status === 403) throw new AuthError(await errorText(res));
    if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
    // Subscribed: now take the snapshots, then apply what arrived meanwhile.
    const reading = readStream(res.body, controller);
    await resync();
    live.ready = true;
    for (const [type, data] of live.queued.splice(0)) emit(type, data);
    live.backoff = 500;
    setConn("live", "live");
    await reading;
    if (!controller.signal.aborted) throw new Error("event stream ended");
  } catch (e) {
    if (controller.signal.aborted) return;
    if (e instanceof AuthError) {
      ctx.signOut(`Token rejected: ${e.message}`);
      return;
    }
    const wait = Math.min(15000, live.backoff) * (0.75 + Math.random() * 0.5);
    live.backoff = Math.min(15000, live.backoff * 2);
    setConn("wait", `reconnecting in ${Math.ceil(wait / 1000)} s`);
    console.warn("event stream:", e);
    setTimeout(() => {
      if (live.stream === controller) connect();
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
        if (line.includes("lagged")) resync().catch((e) => console.warn(e)); // events were dropped
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
  if (live.ready) emit(type, data);
  else live.queued.push([type, data]);
}

// ---------- dialogs, toasts, announcements ----------

function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const ok = el("button", { type: "button", id: "confirm-ok", class: "danger" }, action || "Confirm");
    const cancel = el("button", { type: "button", id: "confirm-cancel", class: "secondary" }, "Cancel");
    const dialog = el("dialog", { id: "confirm-dialog", class: "confirm", "aria-labelledby": "confirm-text" },
      el("p", { id: "confirm-text" }, message), el("div", { class: "actions" }, cancel, ok));
    let answer = false;
    ok.addEventListener("click", () => {
      answer = true;
      dialog.close();
    });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

function announce(message) {
  const box = $("announcer");
  box.append(el("p", {}, message));
  while (box.childNodes.length > 5) box.removeChild(box.firstChild);
}

/** A short-lived message in the corner (at most three at once; they never catch clicks). */
function toast(message, kind) {
  const box = $("toasts");
  const t = el("div", { class: `toast${kind ? ` toast-${kind}` : ""}`, role: "status" }, message);
  box.append(t);
  while (box.childNodes.length > 3) box.removeChild(box.firstChild);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

// ---------- views and navigation ----------

/** The container element of view `name` (`data-view` in index.html, or a new section in `<main>`). */
function view(name) {
  let node = document.querySelector(`[data-view="${CSS.escape(name)}"]`);
  if (!node) {
    node = el("section", { "data-view": name, class: "card view", hidden: true });
    $("app").append(node);
  }
  return node;
}

function go(hash) {
  if (location.hash === hash) emit("route", ctx.route);
  else location.hash = hash;
}

/** Up from a detail view: a robot to the list it was opened from (the fleet or a rollout), anything else to
 * the fleet. Deterministic, unlike history.back() (the browser's own back button still walks the history). */
function back() {
  go(ctx.parent || "#/");
}

// ---------- sign-in ----------

async function whoAmI() {
  try {
    return await api.get("/api/me");
  } catch (e) {
    if (e instanceof AuthError) throw e;
    // A server without accounts: the bootstrap admin token is the only way in.
    return { name: "admin-token", role: "admin" };
  }
}

const ctx = {
  api,
  me: null,
  route: { name: "fleet", id: null },
  can(role) {
    return !!ctx.me && ROLES.indexOf(ctx.me.role) >= ROLES.indexOf(role) && ROLES.includes(role);
  },
  on,
  emit,
  el,
  clear,
  confirm: confirmDialog,
  go,
  back,
  parent: "#/",
  view,
  toast,
  announce,
  fmt: { ago, absolute, bytes, duration, statusBadge, tagChips, STATUS_LABEL },
  /** Signs in with a token; `user` ({name, role}) when the login answered it, else asked from GET /api/me. */
  async signIn(token, user) {
    live.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      ctx.me = user || (await whoAmI());
    } catch {
      return; // signOut already ran
    }
    sessionStorage.setItem(USER_KEY, JSON.stringify(ctx.me));
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    document.body.dataset.role = ctx.me.role;
    emit("signin", ctx.me);
    connect();
  },
  /** Forgets the token and shows the sign-in form with `message`. */
  signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    live.token = null;
    ctx.me = null;
    if (live.stream) live.stream.abort();
    live.stream = null;
    $("app").hidden = true;
    $("login").hidden = false;
    $("logout").hidden = true;
    $("login-error").textContent = message || "";
    setConn("off", "not connected");
    emit("signout", message);
    const input = $("token-input");
    if (input) input.focus();
  },
  /** The stored session of this tab, if any: [token, user]. */
  stored() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    let user = null;
    try {
      user = JSON.parse(sessionStorage.getItem(USER_KEY));
    } catch {
      user = null;
    }
    return [token, user];
  },
};

export default ctx;
