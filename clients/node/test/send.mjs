// Send one job from Node, as a service would: node test/send.mjs ACTOR 'PAYLOAD JSON' ['OPTIONS JSON'].
// Reads EDUJOBS_RABBITMQ_URL and EDUJOBS_SIGNING_KEY; prints the message id. Used by the Python
// end-to-end test (tests/e2e/test_node_client.py) against a running `dramatiq actors` worker.
import { createClient } from "../index.js";

const [actorName, payload, options = "{}"] = process.argv.slice(2);
const client = createClient({
  url: process.env.EDUJOBS_RABBITMQ_URL,
  signingKey: process.env.EDUJOBS_SIGNING_KEY,
});
try {
  const id = await client.send(actorName, JSON.parse(payload), JSON.parse(options));
  console.log(id);
} catch (error) {
  console.error(`${error.name}: ${error.message}`);
  process.exitCode = 1;
} finally {
  await client.close();
}
