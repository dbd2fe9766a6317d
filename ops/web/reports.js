// edujobs operations page, Reports section: request an analytics report, follow its progress, download
// it. Plain JavaScript over /v1/reports with the page's bearer token (scope "reports" or "reports:all");
// uses app.js's helpers (api, cell, button, guarded). The file is fetched with the token and handed to
// the browser as a blob, so no token ever goes into a URL.
"use strict";

const reportsStatus = (text, isError = false) => {
  const status = document.querySelector("#reports-status");
  status.textContent = text;
  status.className = isError ? "error" : "";
};
let reportsTimer = null;

function reportParameters() {
  const parameters = {};
  for (const name of ["start_date", "end_date", "group_by", "instructor_id", "student_id"]) {
    const value = document.querySelector(`#report-${name.replace("_", "-")}`).value.trim();
    if (value) parameters[name] = /_id$/.test(name) ? Number(value) : value;
  }
  const courses = document.querySelector("#report-course-ids").value.trim();
  if (courses) parameters.course_ids = courses.split(",").map((id) => Number(id.trim()));
  return parameters;
}

async function requestReport() {
  const requestedBy = document.querySelector("#report-requested-by").value.trim();
  const body = {
    type: document.querySelector("#report-type").value,
    format: document.querySelector("#report-format").value,
    parameters: reportParameters(),
    fresh: document.querySelector("#report-fresh").checked,
  };
  if (requestedBy) body.requested_by = Number(requestedBy);
  try {
    const report = await api("POST", "/v1/reports", body);
    reportsStatus(report.cached ? `Report ${report.id} is ready (from the cache).` : `Report ${report.id} queued.`);
  } catch (error) {
    reportsStatus(error.message, true);
  }
  await loadReports();
}

async function downloadReport(report) {
  const response = await fetch(`/v1/reports/${report.id}/file`, { headers: { Authorization: "Bearer " + token } });
  if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${report.type}-${report.id}.${report.format}`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  reportsStatus(`Downloaded report ${report.id}.`);
}

async function loadReports() {
  let reports;
  try {
    reports = await api("GET", "/v1/reports?limit=25");
  } catch (error) {
    reportsStatus(error.message, true);
    return;
  }
  const body = document.querySelector("#reports tbody");
  body.replaceChildren();
  for (const report of reports) {
    const row = document.createElement("tr");
    row.dataset.id = report.id;
    row.dataset.status = report.status;
    cell(row, report.id, "num");
    cell(row, report.type);
    cell(row, report.format);
    cell(row, report.status, report.status === "failed" || report.status === "cancelled" ? "error" : "");
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = report.progress || 0;
    const td = cell(row, `${report.progress || 0}%`);
    td.prepend(progress, " ");
    cell(row, report.rows === null ? "" : report.rows.toLocaleString(), "num");
    cell(row, (report.created_at || "").replace("T", " ").slice(0, 19));
    const actions = cell(row, "");
    if (report.status === "ready") {
      actions.appendChild(button("Download", () => guarded(() => downloadReport(report)), "download"));
    }
    body.appendChild(row);
  }
  if (!reports.length) {
    const row = document.createElement("tr");
    cell(row, "No reports yet.").colSpan = 8;
    body.appendChild(row);
  }
  clearTimeout(reportsTimer);
  if (reports.some((r) => r.status === "pending" || r.status === "running")) {
    reportsTimer = setTimeout(loadReports, 2000);
  }
}

document.querySelector("#report-form").addEventListener("submit", (event) => {
  event.preventDefault();
  requestReport();
});
document.querySelector("#reports-refresh").addEventListener("click", () => loadReports());
document.addEventListener("edujobs-start", () => loadReports());
