// Workers: every worker process from its heartbeat (GET /v1/workers); a stale one (its beats
// stopped: killed, out of memory, its host gone) is flagged.
"use strict";

function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

let workersAsked = 0;

async function loadWorkers() {
  const asked = ++workersAsked;
  const workers = await api("GET", "/v1/workers");
  if (asked !== workersAsked) return; // a later refresh draws instead
  const body = $("#workers tbody");
  body.replaceChildren();
  for (const w of workers) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.id;
    tr.dataset.status = w.status;
    tr.className = w.status;
    cell(tr, w.status === "stale" ? "stale: no heartbeat" : w.status, `${w.status} status`);
    cell(tr, w.pool);
    cell(tr, w.host);
    cell(tr, w.pid, "num");
    cell(tr, w.queues.join(", "));
    for (const key of ["threads", "in_flight", "processed", "failed"]) cell(tr, w[key], "num");
    cell(tr, w.started_at.slice(0, 19).replace("T", " "));
    cell(tr, ago(w.silent_seconds));
    body.appendChild(tr);
  }
  if (workers.length === 0) {
    const tr = document.createElement("tr");
    cell(tr, "No worker has sent a heartbeat lately.").colSpan = 11;
    body.appendChild(tr);
  }
}

sectionLoaders.push(loadWorkers);
