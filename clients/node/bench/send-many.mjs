// The Node side of `python -m bench.node_client`: node bench/send-many.mjs URL KEY.
// Warms up (connection, confirm channel, queue check), then for each COUNT line read on stdin
// sends COUNT notifications.send_email with sendMany and prints {"seconds", "cpu_seconds"} of
// that call alone (its wall time, and this process's CPU time) as one JSON line.
import { createInterface } from "node:readline";

import { createClient } from "../index.js";

const [url, signingKey] = process.argv.slice(2);
const client = createClient({ url, signingKey });
const payload = (i) => ({ user_id: i + 1, template: "welcome" });

await client.send("notifications.send_email", payload(0));
console.log(JSON.stringify({ ready: true }));
for await (const line of createInterface({ input: process.stdin })) {
  const count = Number(line);
  const items = Array.from({ length: count }, (_, i) => ({ actorName: "notifications.send_email", payload: payload(i) }));
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await client.sendMany(items);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ seconds, cpu_seconds: (used.user + used.system) / 1e6 }));
}
await client.close();
