// modelhub's reference analytics page: plain JavaScript, no build step, every figure through the public
// GraphQL API (persisted operations by hash, listed at /ui/config.json). Charts are SVG drawn here.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#16a34a", "#f59e0b", "#db2777", "#7c3aed", "#0891b2", "#94a3b8"];
const DAY_MS = 86400000;
const state = { config: null, days: 30, prefix: "", after: null, models: [], selected: null, seq: 0 };
const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : String(child));
  return el;
}

const fmt = new Intl.NumberFormat("en-US");
function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return (i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
}
const day = (iso) => iso.slice(0, 10);
const shortDay = (iso) => new Date(iso).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return shortDay(iso) + ", " + d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
}

// ---- API --------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(message, code) { super(message); this.code = code; }
}

function credentials() {
  const auth = state.config ? state.config.auth : "token";
  const signedIn = oidcToken();
  if (signedIn) return { Authorization: "Bearer " + signedIn };
  const stored = localStorage.getItem(auth === "header" ? "modelhub.engineer" : "modelhub.token");
  if (auth === "header") return { "X-Engineer-ID": stored || "analytics-ui" };
  return stored ? { Authorization: "Bearer " + stored } : {};
}

async function gql(operationName, variables) {
  const sha256Hash = state.config.operations[operationName];
  let resp;
  try {
    resp = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...credentials() },
      body: JSON.stringify({ operationName, variables, extensions: { persistedQuery: { version: 1, sha256Hash } } }),
    });
  } catch (err) {
    throw new ApiError("the API could not be reached (" + err.message + ")", "UNREACHABLE");
  }
  let body;
  try { body = await resp.json(); } catch (err) {
    throw new ApiError("the API answered HTTP " + resp.status + " without JSON", "BAD_RESPONSE");
  }
  if (body.errors && body.errors.length) {
    const first = body.errors[0];
    throw new ApiError(first.message, (first.extensions || {}).code || "ERROR");
  }
  if (!resp.ok) throw new ApiError("the API answered HTTP " + resp.status, "HTTP_" + resp.status);
  return body.data;
}

function range() {
  const now = Date.now();
  const until = new Date(Math.floor(now / DAY_MS) * DAY_MS + DAY_MS);
  const since = new Date(until.getTime() - state.days * DAY_MS);
  return { since: since.toISOString(), until: until.toISOString() };
}

// ---- states -----------------------------------------------------------------------------------------
function showError(err) {
  $("error-text").textContent = err.code === "UNAUTHENTICATED"
    ? (err.message.startsWith("sign-in failed") ? err.message : "The API needs to know who you are: use Sign in (" + err.message + ").")
    : err.message;
  $("error").hidden = false;
}
function clearError() { $("error").hidden = true; }

function empty(title, hint) {
  return h("div", { class: "empty", role: "status" }, h("strong", {}, title), hint || "");
}

function cards(target, items) {
  target.replaceChildren(...items.map(([label, value]) =>
    h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value))));
}

// ---- charts -----------------------------------------------------------------------------------------
// The axis top: four equal steps of 1, 2 or 5 times a power of ten (so every tick is a round number).
function niceMax(max) {
  const raw = Math.max(1, max / 4);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw);
  return step * 4;
}

// A stacked bar chart: one bar (a <g class="bar">) per bucket with downloads, segments per series.
function stackedBars(target, legend, result, label) {
  const buckets = result.buckets;
  const series = result.series;
  legend.replaceChildren();
  if (!result.total) {
    const r = range();
    target.replaceChildren(empty("No downloads in this range",
      "Nothing completed between " + shortDay(r.since) + " and " + shortDay(new Date(Date.parse(r.until) - 1).toISOString()) +
      " (UTC). Downloads appear here as soon as they finish."));
    return;
  }
  const W = 960, H = 260, L = 44, R = 8, T = 10, B = 26;
  const max = niceMax(Math.max(...result.totals));
  const slot = (W - L - R) / buckets.length;
  const barW = Math.max(2, Math.min(28, slot * 0.7));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const grid = s("g", { class: "grid" });
  const axis = s("g", { class: "axis" });
  for (let i = 0; i <= 4; i += 1) {
    const v = (max / 4) * i;
    grid.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    axis.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt.format(Math.round(v))));
  }
  const every = Math.ceil(buckets.length / 12);
  buckets.forEach((b, i) => {
    if (i % every === 0) {
      axis.append(s("text", { x: L + slot * i + slot / 2, y: H - 8, "text-anchor": "middle" }, shortDay(b)));
    }
  });
  const bars = s("g", {});
  buckets.forEach((b, i) => {
    const total = result.totals[i];
    if (!total) return;
    const x = L + slot * i + (slot - barW) / 2;
    const g = s("g", { class: "bar", "data-day": day(b), "data-total": total, role: "img",
      "aria-label": shortDay(b) + ": " + fmt.format(total) + " " + label });
    let acc = 0;
    series.forEach((ser, k) => {
      const v = ser.values[i];
      if (!v) return;
      const top = y(acc + v);
      g.append(s("rect", { x, y: top, width: barW, height: Math.max(0.5, y(acc) - top), fill: COLORS[ser.isOther ? 6 : k % 6] },
        s("title", {}, shortDay(b) + " · " + (ser.isOther ? "other" : ser.key) + ": " + fmt.format(v))));
      acc += v;
    });
    bars.append(g);
  });
  const svg = s("svg", { viewBox: "0 0 " + W + " " + H, role: "group", "aria-label": "Daily " + label }, grid, axis, bars);
  target.replaceChildren(svg);
  series.forEach((ser, k) => {
    legend.append(h("li", {}, h("span", { class: "swatch", style: "background:" + COLORS[ser.isOther ? 6 : k % 6] }),
      (ser.isOther ? "other" : ser.key) + " · " + fmt.format(ser.total)));
  });
}

function hbars(target, rows, emptyText, onPick) {
  if (!rows.length) { target.replaceChildren(empty(emptyText)); return; }
  const max = Math.max(...rows.map((r) => r.total)) || 1;
  const grid = h("div", { class: "hbars", role: "list" });
  for (const r of rows) {
    const key = onPick && !r.isOther
      ? h("button", { class: "ghost k", type: "button", onclick: () => onPick(r.key) }, r.key)
      : h("span", { class: "k" }, r.isOther ? "other" : r.key);
    grid.append(h("div", { role: "listitem", style: "display:contents" }, key,
      h("div", { class: "track" }, h("div", { class: "fill", style: "width:" + (100 * r.total / max).toFixed(1) + "%" })),
      h("span", { class: "v" }, fmt.format(r.total))));
  }
  target.replaceChildren(grid);
}

function table(target, head, rows, emptyText) {
  if (!rows.length) { target.replaceChildren(empty(emptyText)); return; }
  target.replaceChildren(h("table", {},
    h("thead", {}, h("tr", {}, head.map(([t, cls]) => h("th", { class: cls, scope: "col" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: head[i][1] }, c)))))));
}

// ---- views ------------------------------------------------------------------------------------------
async function loadModels(append) {
  const data = await gql("UiModels", { prefix: state.prefix || null, after: append ? state.after : null });
  const page = data.models;
  state.models = append ? state.models.concat(page.nodes) : page.nodes;
  state.after = page.pageInfo.endCursor;
  $("more-models").hidden = !page.pageInfo.hasNextPage;
  $("model-count").textContent = page.totalCount === 0 ? "" : fmt.format(page.totalCount) + (page.totalCount === 1 ? " model" : " models");
  const list = $("models");
  if (!state.models.length) {
    list.replaceChildren(h("li", {}, state.prefix
      ? empty("No model starts with “" + state.prefix + "”")
      : empty("No models yet", h("span", {}, "Register one with ", h("code", {}, "modelhub push FILE --name NAME --project P")))));
    return;
  }
  list.replaceChildren(...state.models.map((m) => h("li", {},
    h("button", { type: "button", "data-model": m.name, "aria-current": m.name === state.selected ? "true" : "false",
      onclick: () => openModel(m.name) },
      h("span", { class: "name" }, m.name), h("span", { class: "count", title: "complete downloads, all time" }, fmt.format(m.downloadCount)),
      h("span", { class: "project" }, m.projectName + " · " + m.owner)))));
}

async function loadOverview() {
  const r = range();
  $("overview-range").textContent = shortDay(r.since) + " – " + shortDay(new Date(Date.parse(r.until) - 1).toISOString()) + " (UTC days)";
  const data = await gql("UiOverview", r);
  const daily = data.daily;
  cards($("cards"), [
    ["Completed downloads", fmt.format(daily.total)],
    ["Bytes sent", bytes((data.bytes.rows[0] || { totalBytes: 0 }).totalBytes)],
    ["Models downloaded", fmt.format(daily.groups)],
    ["Engineers", fmt.format(data.engineers.groups)],
  ]);
  $("source").textContent = "source: " + daily.source.toLowerCase();
  stackedBars($("daily-chart"), $("daily-legend"), daily, "completed downloads");
  hbars($("top-models"), daily.series.filter((x) => x.total > 0), "No downloads in this range", openModel);
  hbars($("top-engineers"), data.engineers.series.filter((x) => x.total > 0), "No downloads in this range");
  const kinds = data.kinds.rows.map((row) => ({ key: row.clientKind, isOther: false, total: row.distinctDownloads }));
  hbars($("client-kinds"), kinds.filter((x) => x.total > 0), "No downloads in this range");
}

async function loadDetail(name) {
  const data = await gql("UiModel", { name, ...range() });
  const m = data.model;
  if (!m) {
    $("detail-title").textContent = name;
    $("detail-meta").textContent = "";
    $("detail-cards").replaceChildren();
    $("history-chart").replaceChildren(empty("This model no longer exists"));
    $("history-legend").replaceChildren();
    $("versions").replaceChildren();
    $("recent").replaceChildren();
    return;
  }
  $("detail-title").textContent = m.name;
  $("detail-meta").replaceChildren(m.projectName + " · owner " + m.owner + " · registered " + when(m.createdAt) + " UTC ",
    ...m.tags.map((t) => h("span", { class: "tag" }, t)),
    ...m.aliases.map((a) => h("span", { class: "tag" }, a.alias + " → v" + a.version)));
  cards($("detail-cards"), [
    ["Downloads in range", fmt.format(data.history.total)],
    ["Downloads, all time", fmt.format(m.downloadCount)],
    ["Versions", fmt.format(m.versions.nodes.length)],
    ["Last download", m.lastDownloadedAt ? shortDay(m.lastDownloadedAt) : "never"],
  ]);
  const history = { ...data.history, series: data.history.series.map((x) => ({ ...x, key: x.isOther ? x.key : "v" + x.key })) };
  stackedBars($("history-chart"), $("history-legend"), history, "completed downloads");
  table($("versions"), [["Version"], ["Size", "num"], ["Checksum"], ["Downloads", "num"], ["Registered"]],
    m.versions.nodes.map((v) => ["v" + v.version, bytes(v.sizeBytes), v.checksumStatus.toLowerCase(), fmt.format(v.downloadCount), shortDay(v.createdAt)]),
    "No versions");
  table($("recent"), [["When (UTC)"], ["Who"], ["Version"], ["Status"], ["Bytes", "num"]],
    data.recent.nodes.map((d) => [when(d.startedAt), d.engineer, "v" + d.version, d.status.toLowerCase() + (d.completesDownload ? " ✓" : ""), bytes(d.bytesSent)]),
    "Nobody has downloaded it yet");
}

async function run(work) {
  const seq = ++state.seq;
  document.body.classList.add("loading");
  try {
    await work();
    if (seq === state.seq) clearError();
  } catch (err) {
    if (seq === state.seq) showError(err instanceof ApiError ? err : new ApiError(String(err.message || err), "ERROR"));
    console.error(err);
  } finally {
    if (seq === state.seq) document.body.classList.remove("loading");
  }
}

function route() {
  const name = new URLSearchParams(location.hash.slice(1)).get("model");
  state.selected = name;
  for (const b of document.querySelectorAll("#models button")) b.setAttribute("aria-current", String(b.dataset.model === name));
  $("overview").hidden = Boolean(name);
  $("detail").hidden = !name;
  return run(name ? () => loadDetail(name) : loadOverview);
}

function openModel(name) {
  location.hash = "model=" + encodeURIComponent(name);
}

function refreshAll() {
  return run(async () => { await loadModels(false); await (state.selected ? loadDetail(state.selected) : loadOverview()); });
}

// ---- single sign-on (OIDC authorization-code flow with PKCE, a public client: no secret, no library) ---
// The access token lives in sessionStorage (this tab, until it closes or the token expires); the PKCE
// verifier and the state only for the round trip to the provider.
const OIDC_KEY = "modelhub.oidc";
const PENDING_KEY = "modelhub.oidc.pending";

function b64url(bytes) {
  let bin = "";
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
const randomString = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));

function oidcSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(OIDC_KEY) || "null");
    if (saved && saved.expiresAt > Date.now() + 5000) return saved;
  } catch (err) { /* a damaged entry is dropped below */ }
  sessionStorage.removeItem(OIDC_KEY);
  return null;
}
function oidcToken() { const s = oidcSession(); return s ? s.accessToken : null; }

// Only for display: who the token names (the server verifies it; the page never trusts these claims).
function displayName(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return claims.email || claims.preferred_username || claims.sub || "signed in";
  } catch (err) { return "signed in"; }
}

function redirectUri() { return location.origin + "/ui"; }

async function startSignIn(then) {
  const oidc = state.config.oidc;
  if (!window.crypto || !crypto.subtle) {
    showError(new ApiError("sign-in failed: this page must be served over https (or from localhost) for the browser to offer WebCrypto", "UNAUTHENTICATED"));
    return;
  }
  const verifier = randomString(32);
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const pending = { verifier, state: randomString(16), then: then || location.hash || "" };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const params = new URLSearchParams({
    response_type: "code", client_id: oidc.clientId, redirect_uri: redirectUri(), scope: oidc.scope,
    state: pending.state, code_challenge: challenge, code_challenge_method: "S256",
  });
  // A resource indicator (RFC 8707) when the audience is a URI: providers that support it put it in the
  // access token's `aud`; others ignore it.
  if (oidc.audience.includes(":")) params.set("resource", oidc.audience);
  location.assign(oidc.authorizationEndpoint + "?" + params.toString());
}

// Back from the provider with ?code=…&state=…: exchange the code (with the verifier) for tokens.
async function finishSignIn() {
  const query = new URLSearchParams(location.search);
  if (!query.has("code") && !query.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, "", "/ui" + (pending && pending.then.startsWith("#") ? pending.then : ""));
  if (query.has("error")) throw new ApiError("sign-in failed: " + (query.get("error_description") || query.get("error")), "UNAUTHENTICATED");
  if (!pending || query.get("state") !== pending.state) throw new ApiError("sign-in failed: the answer does not match this browser's request", "UNAUTHENTICATED");
  const oidc = state.config.oidc;
  // RFC 9207: a provider that names itself in the answer must be the configured one (mix-up defence).
  if (query.has("iss") && query.get("iss") !== oidc.issuer) throw new ApiError("sign-in failed: the answer comes from another provider", "UNAUTHENTICATED");
  const form = new URLSearchParams({
    grant_type: "authorization_code", code: query.get("code"), redirect_uri: redirectUri(),
    client_id: oidc.clientId, code_verifier: pending.verifier,
  });
  if (oidc.audience.includes(":")) form.set("resource", oidc.audience);
  let body;
  try {
    const resp = await fetch(oidc.tokenEndpoint, { method: "POST", body: form });
    body = await resp.json();
    if (!resp.ok) throw new Error(body.error_description || body.error || "HTTP " + resp.status);
  } catch (err) {
    throw new ApiError("sign-in failed: the provider refused the code (" + err.message + ")", "UNAUTHENTICATED");
  }
  const expiresIn = Number(body.expires_in) || 300;
  sessionStorage.setItem(OIDC_KEY, JSON.stringify({
    accessToken: body.access_token, name: displayName(body.id_token || body.access_token),
    expiresAt: Date.now() + expiresIn * 1000,
  }));
  return pending.then;
}

// GraphiQL (same origin) keeps its headers editor in localStorage: hand it the signed-in token.
function openGraphiQL(e) {
  const token = oidcToken();
  if (!state.config.oidc) return;
  e.preventDefault();
  if (!token) { startSignIn("graphiql"); return; }
  localStorage.setItem("graphiql:headers", JSON.stringify({ Authorization: "Bearer " + token }, null, 2));
  location.assign("/graphql");
}

// Signing out takes the token out of GraphiQL's saved tabs too (their queries stay).
function forgetInGraphiQL(token) {
  localStorage.removeItem("graphiql:headers");
  try {
    const saved = JSON.parse(localStorage.getItem("graphiql:tabState") || "null");
    if (!token || !saved || !Array.isArray(saved.tabs)) return;
    for (const tab of saved.tabs) if (tab.headers && tab.headers.includes(token)) tab.headers = null;
    localStorage.setItem("graphiql:tabState", JSON.stringify(saved));
  } catch (err) { localStorage.removeItem("graphiql:tabState"); }
}

function setupSignOn() {
  const button = $("identity");
  const label = () => {
    const s = oidcSession();
    button.textContent = s ? "Sign out " + s.name : "Sign in";
  };
  label();
  button.addEventListener("click", () => {
    if (oidcSession()) {
      forgetInGraphiQL(oidcToken());
      sessionStorage.removeItem(OIDC_KEY);
      label();
      refreshAll();
    } else {
      startSignIn();
    }
  });
}

// ---- identity ---------------------------------------------------------------------------------------
function setupIdentity() {
  if (state.config.oidc) { setupSignOn(); return; }
  const header = state.config.auth === "header";
  const key = header ? "modelhub.engineer" : "modelhub.token";
  const button = $("identity");
  const label = () => {
    const v = localStorage.getItem(key);
    button.textContent = header ? "Engineer: " + (v || "analytics-ui") : (v ? "Token set" : "Sign in");
  };
  label();
  $("credential-label").textContent = header ? "Engineer id (sent as X-Engineer-ID)" : "API token (sent as Authorization: Bearer)";
  $("credential").type = header ? "text" : "password";
  $("signin-help").textContent = header
    ? "This server trusts the X-Engineer-ID header (development mode)."
    : "Create one with `modelhub token create --name NAME --principal WHO --role READER`. It stays in this browser only.";
  button.addEventListener("click", () => { $("credential").value = localStorage.getItem(key) || ""; $("signin").showModal(); });
  $("signin").addEventListener("close", () => {
    if ($("signin").returnValue !== "save") return;
    const v = $("credential").value.trim();
    if (v) localStorage.setItem(key, v); else localStorage.removeItem(key);
    label();
    refreshAll();
  });
}

// ---- keyboard ---------------------------------------------------------------------------------------
function setupKeys() {
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
    if (e.key === "/" && !typing) { e.preventDefault(); $("search").focus(); return; }
    if (e.key === "Escape" && state.selected && !$("signin").open) { location.hash = ""; $("search").focus(); return; }
    const inList = e.target.closest && e.target.closest("#models");
    if ((e.key === "ArrowDown" || e.key === "ArrowUp") && (inList || e.target === $("search"))) {
      const buttons = [...document.querySelectorAll("#models button")];
      if (!buttons.length) return;
      e.preventDefault();
      const i = buttons.indexOf(e.target);
      const next = e.key === "ArrowDown" ? Math.min(i + 1, buttons.length - 1) : Math.max(i - 1, 0);
      buttons[i < 0 ? 0 : next].focus();
    }
  });
  let timer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.prefix = e.target.value.trim(); run(() => loadModels(false)); }, 200);
  });
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && state.models.length) openModel(state.models[0].name);
  });
}

async function start() {
  try {
    const resp = await fetch("/ui/config.json");
    state.config = await resp.json();
  } catch (err) {
    showError(new ApiError("the server could not be reached (" + err.message + ")", "UNREACHABLE"));
    return;
  }
  try {
    if (state.config.oidc && (await finishSignIn()) === "graphiql") {
      openGraphiQL(new Event("click"));
      return;
    }
  } catch (err) {
    showError(err instanceof ApiError ? err : new ApiError(String(err.message || err), "ERROR"));
  }
  setupIdentity();
  setupKeys();
  $("graphiql").addEventListener("click", openGraphiQL);
  $("range").addEventListener("change", (e) => { state.days = Number(e.target.value); route(); });
  $("more-models").addEventListener("click", () => run(() => loadModels(true)));
  $("back").addEventListener("click", () => { location.hash = ""; });
  $("retry").addEventListener("click", refreshAll);
  window.addEventListener("hashchange", () => { route(); if (!state.selected) $("main").focus(); });
  state.selected = new URLSearchParams(location.hash.slice(1)).get("model");
  await run(() => loadModels(false));
  await route();
}

start();
