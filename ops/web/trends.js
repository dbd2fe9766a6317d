// Trends: processed, failed and backlog per queue over the last hour or day (GET /v1/trends),
// drawn as plain SVG (no charting library: nothing loads from elsewhere, the CSP stays strict).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 320, height: 120, left: 34, right: 6, top: 8, bottom: 18 };

function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (parent) parent.appendChild(element);
  return element;
}

function hhmm(iso) {
  return iso.slice(11, 16);
}

function drawQueue(queue, series, buckets) {
  const figure = document.createElement("figure");
  figure.dataset.queue = queue;
  const caption = document.createElement("figcaption");
  const total = (values) => values.reduce((sum, v) => sum + (v || 0), 0);
  const lastBacklog = [...series.backlog].reverse().find((v) => v !== null);
  caption.textContent = `${queue}: ${total(series.processed)} processed, ${total(series.failed)} failed, backlog ${lastBacklog === undefined ? "not sampled" : lastBacklog}`;
  figure.appendChild(caption);

  const { width, height, left, right, top, bottom } = CHART;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": caption.textContent }, figure);
  const values = [...series.processed, ...series.failed, ...series.backlog.filter((v) => v !== null)];
  const max = Math.max(1, ...values);
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const x = (i) => left + (buckets.length > 1 ? (i * plotWidth) / (buckets.length - 1) : 0);
  const y = (v) => top + plotHeight - (v * plotHeight) / max;

  svg("line", { x1: left, y1: top + plotHeight, x2: width - right, y2: top + plotHeight, class: "axis" }, chart);
  svg("line", { x1: left, y1: top, x2: left, y2: top + plotHeight, class: "axis" }, chart);
  svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, chart).textContent = String(max);
  svg("text", { x: left - 4, y: top + plotHeight, "text-anchor": "end" }, chart).textContent = "0";
  svg("text", { x: left, y: height - 4 }, chart).textContent = hhmm(buckets[0]);
  svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, chart).textContent = hhmm(buckets[buckets.length - 1]);

  for (const name of ["processed", "failed", "backlog"]) {
    // A backlog bucket without a sample (no worker ran) breaks the line rather than drawing 0.
    let points = [];
    const segments = [];
    series[name].forEach((v, i) => {
      if (v === null) {
        if (points.length) segments.push(points);
        points = [];
      } else {
        points.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      }
    });
    if (points.length) segments.push(points);
    for (const segment of segments) {
      // A lone point is drawn as a short dash, so that it can be seen.
      const drawn = segment.length === 1 ? [segment[0], segment[0].replace(/^([\d.]+)/, (m) => (Number(m) + 2).toFixed(1))] : segment;
      svg("polyline", { points: drawn.join(" "), class: name, "data-total": total(series[name]) }, chart);
    }
  }
  return figure;
}

let trendsAsked = 0;

async function loadTrends() {
  const span = $("#trends-window").value;
  const asked = ++trendsAsked;
  const data = await api("GET", `/v1/trends?window=${encodeURIComponent(span)}`);
  if (asked !== trendsAsked) return; // a later request (another window, a refresh) draws instead
  const box = $("#trends");
  box.replaceChildren();
  const queues = Object.keys(data.queues);
  for (const queue of queues) box.appendChild(drawQueue(queue, data.queues[queue], data.buckets));
  const step = data.bucket_seconds >= 60 ? `${data.bucket_seconds / 60} min` : `${data.bucket_seconds} s`;
  $("#trends-note").textContent = queues.length
    ? `— per ${step}, UTC; processed and failed from job state, backlog sampled by the workers.`
    : "— no job ended and no queue was sampled in this window.";
}

sectionLoaders.push(loadTrends);
$("#trends-window").addEventListener("change", () => guarded(loadTrends));
