// thoth-nb reviewer page: plain fetch calls against this server's /v1 API; no build step.
// The key comes from the URL fragment (#key=thk_...) or the form, and is kept in sessionStorage only.
"use strict";

const KEY = "thoth_key";
const REVIEWER = "thoth_reviewer";
const state = { tab: "approvals", approvals: [], signature: "", timer: null };

function $(id) { return document.getElementById(id); }

function takeKeyFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY, key);
    history.replaceState(null, "", location.pathname + location.search);  // keep it out of history
  }
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text || "";
  el.className = isError ? "error" : "";
}

async function api(path, options) {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, Object.assign({ headers, cache: "no-store" }, options || {}));
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = (body && (body.message || body.error)) || response.statusText;
    const error = new Error(response.status + ": " + message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content == null ? "" : String(content);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function pre(value) {
  const el = document.createElement("pre");
  el.textContent = value == null ? "" : JSON.stringify(value, null, 2);
  return el;
}

function short(id) { return id ? String(id).slice(0, 12) : ""; }

function timeLeft(expiresAt) {
  const ms = Date.parse(expiresAt) - Date.now();
  if (!(ms > 0)) return "expired";
  const s = Math.floor(ms / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? m + "m " + (s % 60) + "s" : s + "s";
}

async function resolve(approvalId, decision, controls) {
  controls.buttons.forEach((b) => { b.disabled = true; });
  const reviewer = sessionStorage.getItem(REVIEWER) || "reviewer page";
  const body = { decision, reviewer };
  const note = controls.note.value.trim();
  if (note) body.note = note;
  if (decision === "approve" && controls.session.checked) body.scope = "session";
  try {
    const record = await api("/v1/approvals/" + encodeURIComponent(approvalId) + "/resolve", {
      method: "POST",
      body: JSON.stringify(body),
    });
    setStatus(record.tool_name + " " + record.status + " by " + record.reviewer);
  } catch (e) {
    setStatus("could not " + decision + ": " + e.message, true);
  }
  await refresh();
}

function renderApprovals(items) {
  const body = $("approvals-body");
  const signature = items.map((a) => a.approval_id).join(",");
  $("pending-count").textContent = items.length ? "(" + items.length + ")" : "";
  $("approvals-empty").hidden = items.length > 0;
  if (signature === state.signature) {  // same queue: only tick the clocks, keep the buttons
    body.querySelectorAll("tr").forEach((tr) => {
      const td = tr.querySelector("td.time-left");
      td.textContent = timeLeft(tr.dataset.expiresAt);
      td.classList.toggle("expired", td.textContent === "expired");
    });
    return;
  }
  state.signature = signature;
  body.replaceChildren();
  for (const a of items) {
    const tr = document.createElement("tr");
    tr.dataset.approvalId = a.approval_id;
    tr.dataset.expiresAt = a.expires_at;
    cell(tr, a.tool_name, "tool");
    cell(tr, pre(a.tool_args));
    cell(tr, a.reason);
    cell(tr, a.risk_score, a.risk_score >= 70 ? "risk-high" : "");
    cell(tr, a.agent_id);
    cell(tr, short(a.session_id)).title = a.session_id;
    cell(tr, timeLeft(a.expires_at), "time-left");
    const approve = document.createElement("button");
    approve.className = "approve";
    approve.textContent = "Approve";
    const deny = document.createElement("button");
    deny.className = "deny";
    deny.textContent = "Deny";
    const note = document.createElement("input");
    note.className = "note";
    note.placeholder = "note (optional)";
    note.size = 14;
    const session = document.createElement("input");
    session.type = "checkbox";
    session.className = "session-scope";
    const sessionLabel = document.createElement("label");
    sessionLabel.title = "also allow this exact call for the rest of the session";
    sessionLabel.append(session, " session");
    const controls = { buttons: [approve, deny], note, session };
    approve.addEventListener("click", () => resolve(a.approval_id, "approve", controls));
    deny.addEventListener("click", () => resolve(a.approval_id, "deny", controls));
    const actions = document.createElement("span");
    actions.append(note, " ", sessionLabel, " ", approve, deny);
    cell(tr, actions);
    body.appendChild(tr);
  }
}

function renderSessions(items) {
  const body = $("sessions-body");
  body.replaceChildren();
  for (const s of items) {
    const tr = document.createElement("tr");
    cell(tr, short(s.session_id)).title = s.session_id;
    for (const k of ["agent_id", "user_id", "first_seen", "last_seen", "tool_calls", "blocked", "stepped_up",
                     "violations"]) cell(tr, s[k]);
    body.appendChild(tr);
  }
}

function renderViolations(items) {
  const body = $("violations-body");
  body.replaceChildren();
  for (const v of items) {
    const tr = document.createElement("tr");
    cell(tr, v.created_at);
    cell(tr, v.tool_name);
    cell(tr, v.decision);
    cell(tr, v.reason);
    cell(tr, v.decision_reason_code);
    cell(tr, v.risk_score, v.risk_score >= 70 ? "risk-high" : "");
    cell(tr, short(v.session_id)).title = v.session_id;
    cell(tr, pre(v.tool_args));
    body.appendChild(tr);
  }
}

async function refresh() {
  try {
    if (state.tab === "approvals") {
      renderApprovals((await api("/v1/approvals?status=pending&limit=500")).items);
    } else if (state.tab === "sessions") {
      renderSessions((await api("/v1/sessions?limit=200")).items);
    } else {
      renderViolations((await api("/v1/violations?limit=200")).items);
    }
    if ($("status").className === "error") setStatus("");
  } catch (e) {
    const hint = e.status === 401 ? " (enter a reviewer or admin key above)" : "";
    setStatus(e.message + hint, true);
  }
}

function show(tab) {
  state.tab = tab;
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== tab; });
  refresh();
}

function start() {
  takeKeyFromFragment();
  $("reviewer").value = sessionStorage.getItem(REVIEWER) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    $("key").value = "";
    sessionStorage.setItem(REVIEWER, $("reviewer").value.trim());
    state.signature = "";
    refresh();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); state.signature = ""; refresh(); });
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
  refresh();
  state.timer = setInterval(refresh, 1000);
}

document.addEventListener("DOMContentLoaded", start);
