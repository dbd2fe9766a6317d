// Test helpers: a RabbitMQ vhost of the test's own (through the management API), as the Python
// tests' rabbitmq_vhost does. Unreachable RabbitMQ skips the tests locally and fails them in CI.
import { randomUUID } from "node:crypto";
import { connect as tcpConnect } from "node:net";

const HOST = process.env.EDUJOBS_TEST_RABBITMQ_HOST ?? "127.0.0.1";
const MANAGEMENT = process.env.EDUJOBS_TEST_RABBITMQ_MANAGEMENT ?? `http://${HOST}:15672`;
const AUTH = `Basic ${Buffer.from("guest:guest").toString("base64")}`;

function reachable(port) {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: HOST, port, timeout: 2000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** Why the RabbitMQ tests cannot run (a string), or false when they can; throws in CI. */
export async function rabbitmqMissing() {
  for (const port of [5672, 15672]) {
    if (!(await reachable(port))) {
      const message = `RabbitMQ is not reachable at ${HOST}:${port}`;
      if (process.env.CI) throw new Error(`${message} (CI must have every service up: see .ci/run)`);
      return message;
    }
  }
  return false;
}

export async function management(method, path, body) {
  const response = await fetch(`${MANAGEMENT}${path}`, {
    method,
    headers: { authorization: AUTH, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok && response.status !== 404) throw new Error(`${method} ${path}: ${response.status}`);
  return response.status === 204 || method !== "GET" ? null : response.json();
}

/** Create a vhost; resolve to {url, remove()}. */
export async function createVhost() {
  const vhost = `edujobs-node-test_${randomUUID().slice(0, 10)}`;
  const quoted = encodeURIComponent(vhost);
  await management("PUT", `/api/vhosts/${quoted}`);
  await management("PUT", `/api/permissions/${quoted}/guest`, { configure: ".*", write: ".*", read: ".*" });
  return {
    url: `amqp://guest:guest@${HOST}:5672/${quoted}`,
    remove: () => management("DELETE", `/api/vhosts/${quoted}`),
    /** How many client connections the management API lists on the vhost (it lists a new one late). */
    async connectionCount() {
      return ((await management("GET", `/api/vhosts/${quoted}/connections`)) ?? []).length;
    },
    /** Close every client connection to the vhost, as RabbitMQ does when it restarts or an operator does. */
    async closeConnections() {
      const connections = (await management("GET", `/api/vhosts/${quoted}/connections`)) ?? [];
      for (const { name } of connections) await management("DELETE", `/api/connections/${encodeURIComponent(name)}`);
      return connections.length;
    },
  };
}

/** Poll `predicate` until it is true or the deadline passes (then throw naming `what`). */
export async function waitUntil(predicate, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`not in time: ${what}`);
}
