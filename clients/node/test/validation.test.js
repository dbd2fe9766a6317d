// Payloads are validated against the exported JSON Schemas before anything is published.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  buildMessage,
  ContractError,
  createClient,
  PRIORITIES,
  Schemas,
  senderDocument,
  sign,
  STATE_OPTIONS,
  stateDocument,
  UnknownActorError,
} from "../index.js";

const KEY = "test-signing-key";
const schemas = new Schemas(); // docs/schemas of the repository
const messageSchema = JSON.parse(readFileSync(new URL("../../../docs/schemas/message.schema.json", import.meta.url), "utf8"));

/** A built message as it is published (what message.schema.json describes). */
function published(built) {
  return {
    exchange: "",
    routing_key: built.routingKey,
    properties: { delivery_mode: 2, priority: built.priority, timestamp: Math.floor(Date.now() / 1000) },
    body: JSON.parse(built.body),
  };
}

function verify(fields) {
  const signature = sign(KEY, senderDocument(fields));
  const state = stateDocument(signature, fields.options);
  return (
    fields.options.signature === signature &&
    (state === null ? fields.options.state_signature === undefined : fields.options.state_signature === sign(KEY, state))
  );
}

test("a bad payload is refused with an error naming each bad field", () => {
  // Given a payload with a field of the wrong type, a missing one and an unknown one
  const payload = { user_id: "seven", colour: "red" };
  // When it is validated, Then the error names each field and what is wrong
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload }),
    (error) => {
      assert.ok(error instanceof ContractError);
      assert.match(error.message, /^invalid payload for notifications\.send_email: /);
      assert.match(error.message, /user_id: must be integer/);
      assert.match(error.message, /template: field required/);
      assert.match(error.message, /colour: extra field not permitted/);
      assert.deepEqual(error.problems.map((p) => p.field).sort(), ["colour", "template", "user_id"]);
      return true;
    },
  );
});

test("a nested bad field is named by its path", () => {
  const payload = { user_id: 7, template: "welcome", attachments: [{ filename: 3 }] };
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload }),
    /attachments\.0\./,
  );
});

test("a payload that is not JSON data is refused as such", () => {
  for (const payload of [null, [1], "text", { user_id: 1, template: "welcome", context: { f: () => 1 } }]) {
    assert.throws(
      () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload }),
      (error) => error instanceof ContractError && /^invalid payload for notifications\.send_email: \(payload\)/.test(error.message),
    );
  }
});

test("an unknown actor lists the known ones", () => {
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_fax", payload: {} }),
    (error) => error instanceof UnknownActorError && /notifications\.send_email/.test(error.message),
  );
});

test("in sendMany, nothing is published when one item is bad, and the error says which", async () => {
  // A client on a URL nothing listens on: validation comes first, so no connection is tried
  const client = createClient({ url: "amqp://127.0.0.1:1", signingKey: KEY });
  await assert.rejects(
    client.sendMany([
      { actorName: "notifications.send_email", payload: { user_id: 1, template: "welcome" } },
      { actorName: "notifications.send_email", payload: { user_id: 2 } },
    ]),
    (error) => error instanceof ContractError && /^item #1: invalid payload .*template: field required/.test(error.message),
  );
  await client.close();
});

test("a message is Dramatiq's format, prioritised, signed and matches the message schema", () => {
  // Given a payload and a priority override
  const built = buildMessage(schemas, KEY, {
    actorName: "notifications.send_email",
    payload: { user_id: 3, template: "welcome" },
    priority: "critical",
    idempotencyKey: "welcome:3",
  });
  const fields = JSON.parse(built.body);
  // Then it goes to the actor's queue, with the named priority's AMQP value and the schema's
  // defaults filled in (pydantic's default factories have none in the schema: the worker fills them)
  assert.equal(built.routingKey, "notifications");
  assert.equal(built.priority, 9);
  assert.deepEqual(fields.kwargs, { user_id: 3, template: "welcome", idempotency_key: null });
  assert.deepEqual(fields.options.priority_name, "critical");
  assert.equal(fields.options.idempotency_key, "welcome:3");
  assert.ok(verify(fields));
  // And the whole message matches docs/schemas/message.schema.json
  schemas.validateMessage(published(built));
});

test("a delayed message goes to the delay queue with eta and not_before, both signatures", () => {
  const before = Date.now();
  const built = buildMessage(schemas, KEY, {
    actorName: "notifications.send_sms",
    payload: { user_id: 3, template: "iep_reminder" },
    delay: 3600,
  });
  const fields = JSON.parse(built.body);
  assert.equal(built.routingKey, "notifications.DQ");
  assert.equal(fields.queue_name, "notifications.DQ");
  assert.ok(fields.options.eta >= before + 3_600_000);
  assert.equal(fields.options.not_before, fields.options.eta);
  assert.match(fields.options.state_signature, /^[0-9a-f]{64}$/);
  assert.ok(verify(fields));
  schemas.validateMessage(published(built));
  // An eta in the past is not a delay
  const now = buildMessage(schemas, KEY, {
    actorName: "notifications.send_sms",
    payload: { user_id: 3, template: "iep_reminder" },
    eta: new Date(before - 1000),
  });
  assert.equal(now.routingKey, "notifications");
});

test("what the message schema would refuse, the client does not build", () => {
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload: { user_id: 1, template: "welcome" }, priority: "urgent" }),
    /unknown priority "urgent": expected one of critical, high, normal, low, bulk/,
  );
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload: { user_id: 1, template: "welcome" }, delay: 1, eta: new Date() }),
    /delay or eta, not both/,
  );
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload: { user_id: 1, template: "welcome" }, idempotencyKey: "" }),
    /idempotencyKey must be a string of 1 to 512/,
  );
  assert.throws(
    () => buildMessage(schemas, KEY, { actorName: "notifications.send_email", payload: { user_id: 1, template: "welcome" }, idempotency_key: "k" }),
    /unknown send option "idempotency_key": expected priority, delay, eta, idempotencyKey/,
  );
});

test("the priorities and the state options are the wire format's", () => {
  const options = messageSchema.$defs.options;
  assert.deepEqual(Object.keys(PRIORITIES), options.properties.priority_name.enum);
  assert.deepEqual([...STATE_OPTIONS].sort(), Object.keys(options.dependentRequired).sort());
  assert.equal(Math.max(...Object.values(PRIORITIES)), options.properties.broker_priority.maximum);
});
