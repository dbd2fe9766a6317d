// Job search: jobs by user, actor, state and time, newest first (GET /v1/jobs), a page at a time;
// a job's id opens it in the Job section below (state, error, cancel).
"use strict";

let jobSearchCursor = null;

function jobQuery() {
  const params = new URLSearchParams({ limit: "50" });
  const user = $("#search-user").value.trim();
  const actor = $("#search-actor").value.trim();
  const state = $("#search-state").value;
  const since = $("#search-since").value;
  if (user) params.set("user_id", user);
  if (actor) params.set("actor", actor);
  if (state) params.set("state", state);
  // The field is read as UTC, as every time on this page.
  if (since) params.set("since", `${since.length === 16 ? since + ":00" : since}+00:00`);
  return params;
}

function short(iso) {
  return iso ? iso.slice(0, 19).replace("T", " ") : "";
}

async function searchJobs(more = false) {
  const params = jobQuery();
  if (more && jobSearchCursor) params.set("cursor", jobSearchCursor);
  const page = await api("GET", `/v1/jobs?${params}`);
  const body = $("#job-results tbody");
  if (!more) body.replaceChildren();
  for (const job of page.jobs) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.message_id;
    tr.dataset.state = job.state;
    const id = cell(tr, "");
    const link = button(job.message_id, () => guarded(() => showJob(job.message_id)), "show-job");
    id.appendChild(link);
    cell(tr, job.actor);
    cell(tr, job.user_id === null ? "" : job.user_id, "num");
    cell(tr, job.state, job.state === "dead" || job.state === "failed" ? "error" : "");
    cell(tr, job.attempts, "num");
    cell(tr, short(job.created_at));
    cell(tr, short(job.finished_at));
    cell(tr, job.enqueued_by || "");
    cell(tr, job.error || "");
    body.appendChild(tr);
  }
  if (!more && page.jobs.length === 0) {
    const tr = document.createElement("tr");
    cell(tr, "No job matches.").colSpan = 9;
    body.appendChild(tr);
  }
  jobSearchCursor = page.next_cursor;
  $("#job-more").hidden = !jobSearchCursor;
}

sectionLoaders.push(() => searchJobs(false));
$("#job-search").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => searchJobs(false));
});
$("#job-more").addEventListener("click", () => guarded(() => searchJobs(true)));
