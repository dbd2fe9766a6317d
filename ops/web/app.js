// edujobs operations page: plain JavaScript over the HTTP API (/v1/...), with the operator's bearer token.
// The token stays in this tab's sessionStorage; every action goes through the API, which audits it.
"use strict";

const $ = (selector) => document.querySelector(selector);
let token = sessionStorage.getItem("edujobs-token") || "";
// Sections kept in their own files (trends.js, workers.js, jobs.js) add their loader here.
const sectionLoaders = [];

function say(text, isError = false) {
  const status = $("#status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!response.ok) {
    const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : text;
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "?" : String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, onClick, name) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (name) b.dataset.action = name;
  b.addEventListener("click", onClick);
  return b;
}

function when(ms) {
  // A time the page cannot show (not a number, out of Date's range) is shown as unknown, not thrown.
  const date = new Date(Number(ms));
  return ms && !Number.isNaN(date.getTime()) ? date.toISOString().replace("T", " ").slice(0, 19) : "";
}

function confirmAction(text) {
  return new Promise((resolve) => {
    const dialog = $("#confirm");
    $("#confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

async function guarded(action) {
  try {
    await action();
  } catch (error) {
    say(error.message, true);
  }
}

// -- queues ---------------------------------------------------------------------------------------

async function loadQueues() {
  const rows = await api("GET", "/v1/queues");
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const q of rows) {
    const tr = document.createElement("tr");
    tr.dataset.queue = q.queue;
    cell(tr, q.queue);
    for (const key of ["ready", "unacked", "delayed", "waiting", "dead", "consumers"]) cell(tr, q[key], "num");
    cell(tr, q.publish_rate === null ? null : q.publish_rate.toFixed(1), "num");
    cell(tr, q.ack_rate === null ? null : q.ack_rate.toFixed(1), "num");
    cell(tr, q.oldest_age_seconds === null ? "" : Math.round(q.oldest_age_seconds) + "s", "num");
    cell(tr, q.paused ? `paused by ${q.paused_by}` : "running", q.paused ? "paused state" : "running state");
    const actions = document.createElement("td");
    if (q.paused) {
      actions.appendChild(button("Resume", () => guarded(async () => {
        await api("POST", `/v1/queues/${q.queue}/resume`);
        say(`Resumed ${q.queue}.`);
        await loadQueues();
      }), "resume"));
    } else {
      actions.appendChild(button("Pause", () => guarded(async () => {
        if (!(await confirmAction(`Pause ${q.queue}? Workers stop taking its messages; they stay queued.`))) return;
        await api("POST", `/v1/queues/${q.queue}/pause`, { reason: "paused from the operations page" });
        say(`Paused ${q.queue}.`);
        await loadQueues();
      }), "pause"));
    }
    tr.appendChild(actions);
    body.appendChild(tr);
  }
}

// -- dead letters -----------------------------------------------------------------------------------

async function loadDeadLetters() {
  const stats = await api("GET", "/v1/dlq");
  const body = $("#dlq tbody");
  body.replaceChildren();
  let groups = 0;
  for (const queue of stats) {
    for (const g of queue.groups) {
      groups += 1;
      const tr = document.createElement("tr");
      tr.dataset.queue = queue.queue;
      tr.dataset.fingerprint = g.fingerprint;
      cell(tr, queue.queue);
      cell(tr, g.count, "num");
      cell(tr, g.actor);
      cell(tr, g.reason);
      cell(tr, g.exception_type);
      cell(tr, g.sample_error);
      cell(tr, when(g.newest));
      const actions = document.createElement("td");
      actions.appendChild(button("Inspect", () => guarded(() => showGroup(queue.queue, g.fingerprint)), "inspect"));
      actions.appendChild(button("Requeue", () => guarded(() => requeue(queue.queue, { fingerprint: g.fingerprint }, `${g.count} dead letter(s) of ${g.actor} (${g.reason})`)), "requeue"));
      actions.appendChild(button("Purge", () => guarded(() => purgeCause(queue.queue, g)), "purge"));
      tr.appendChild(actions);
      body.appendChild(tr);
    }
  }
  if (groups === 0) {
    const tr = document.createElement("tr");
    const td = cell(tr, "No dead letters.");
    td.colSpan = 8;
    body.appendChild(tr);
  }
  // Letters archived before their TTL are read with `edujobs dlq list QUEUE --archived`.
  const archived = stats.filter((q) => q.archived).map((q) => `${q.queue} ${q.archived}`);
  $("#dlq-archived").textContent = archived.length
    ? `Archived to storage (edujobs dlq list QUEUE --archived): ${archived.join(", ")}.`
    : "";
}

async function showGroup(queue, fingerprint) {
  const letters = await api("GET", `/v1/dlq/${queue}?fingerprint=${encodeURIComponent(fingerprint)}&limit=200`);
  $("#letters").hidden = false;
  $("#letters-title").textContent = `${queue}: ${letters.length} dead letter(s), cause ${fingerprint}`;
  const body = $("#letters tbody");
  body.replaceChildren();
  for (const letter of letters) {
    const tr = document.createElement("tr");
    tr.dataset.id = letter.id;
    cell(tr, letter.id);
    cell(tr, letter.actor);
    cell(tr, letter.attempts, "num");
    cell(tr, when(letter.last_failure_at));
    cell(tr, letter.error);
    const actions = document.createElement("td");
    actions.appendChild(button("Details", () => guarded(async () => {
      const detail = await api("GET", `/v1/dlq/${queue}/${encodeURIComponent(letter.id)}`);
      const pre = $("#letter-detail");
      pre.hidden = false;
      pre.textContent = JSON.stringify(detail, null, 2);
    }), "details"));
    actions.appendChild(button("Requeue", () => guarded(() => requeue(queue, { ids: [letter.id] }, `dead letter ${letter.id}`)), "requeue-one"));
    tr.appendChild(actions);
    body.appendChild(tr);
  }
}

async function requeue(queue, selection, what) {
  if (!(await confirmAction(`Requeue ${what} to ${queue}?`))) return;
  const result = await api("POST", `/v1/dlq/${queue}/requeue`, selection);
  const refused = result.skipped.map((s) => `${s.id}: ${s.why}`).join("; ");
  say(`Requeued ${result.count} dead letter(s) to ${queue}.` + (refused ? ` Not requeued: ${refused}.` : ""));
  $("#letters").hidden = true;
  $("#letter-detail").hidden = true;
  await Promise.all([loadDeadLetters(), loadQueues()]);
}

async function purgeCause(queue, group) {
  // Only this row's cause: the fingerprint keeps the other causes of the queue untouched.
  const what = `${group.count} dead letter(s) of ${group.actor} (${group.reason}) in ${queue}`;
  if (!(await confirmAction(`Purge ${what}? This cannot be undone.`))) return;
  const result = await api("POST", `/v1/dlq/${queue}/purge`, { fingerprint: group.fingerprint });
  say(`Purged ${result.count} dead letter(s) of ${queue}.`);
  $("#letters").hidden = true;
  $("#letter-detail").hidden = true;
  await Promise.all([loadDeadLetters(), loadQueues()]);
}

// -- schedules -------------------------------------------------------------------------------------

async function loadSchedules() {
  const rows = await api("GET", "/v1/schedules");
  const body = $("#schedules tbody");
  body.replaceChildren();
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.dataset.schedule = s.name;
    cell(tr, s.name);
    cell(tr, s.kind);
    cell(tr, s.actor);
    cell(tr, s.cron);
    cell(tr, s.timezone);
    cell(tr, s.next.map((t) => t.slice(0, 16).replace("T", " ")).join("\n") || "none").style.whiteSpace = "pre";
    const last = s.last_fire;
    cell(tr, last ? `${last.fire_time.slice(0, 16).replace("T", " ")} ${last.status}` : "never", last && last.status !== "enqueued" ? "error" : "");
    body.appendChild(tr);
  }
}

// -- jobs -------------------------------------------------------------------------------------------

async function showJob(id) {
  const job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  const body = $("#job tbody");
  body.replaceChildren();
  for (const [key, value] of Object.entries(job)) {
    const tr = document.createElement("tr");
    tr.dataset.field = key;
    cell(tr, key);
    cell(tr, value === null ? "" : typeof value === "object" ? JSON.stringify(value) : value);
    body.appendChild(tr);
  }
  $("#job").hidden = false;
  $("#job-cancel").disabled = ["succeeded", "dead", "cancelled"].includes(job.state);
  $("#job-cancel").onclick = () => guarded(async () => {
    if (!(await confirmAction(`Cancel job ${id}?`))) return;
    await api("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`, { reason: "cancelled from the operations page" });
    say(`Cancelled ${id}.`);
    await showJob(id);
  });
}

// -- start ------------------------------------------------------------------------------------------

async function start() {
  $("#app").hidden = false;
  $("#logout").hidden = false;
  say("Loading…");
  document.dispatchEvent(new Event("edujobs-start")); // reports.js loads its section on its own
  await Promise.all([loadQueues(), loadDeadLetters(), loadSchedules(), ...sectionLoaders.map((load) => load())]);
  say("Up to date at " + new Date().toLocaleTimeString() + ".");
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("edujobs-token", token);
  guarded(start);
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("edujobs-token");
  token = "";
  $("#app").hidden = true;
  $("#logout").hidden = true;
  say("Token forgotten.");
});
$("#refresh").addEventListener("click", () => guarded(start));
$("#job-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => showJob($("#job-id").value.trim()));
});
// Once every script of the page has run, so that each section has added its loader.
document.addEventListener("DOMContentLoaded", () => { if (token) guarded(start); });
