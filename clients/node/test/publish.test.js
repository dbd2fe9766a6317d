// The client against the real RabbitMQ, on a vhost of its own: what it publishes, with confirms.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import amqp from "amqplib";

import { createClient, PublishError, Schemas, senderDocument, sign, stateDocument } from "../index.js";
import { createVhost, rabbitmqMissing, waitUntil } from "./rabbitmq.js";

const KEY = "test-signing-key";
const missing = await rabbitmqMissing();

describe("publishing to RabbitMQ", { skip: missing }, () => {
  let vhost;
  let connection;
  let channel;
  let client;
  const schemas = new Schemas();

  before(async () => {
    // Given the queues a worker declares, on this test's vhost, and a client
    vhost = await createVhost();
    await open();
    for (const queue of ["notifications", "notifications.DQ"]) {
      await channel.assertQueue(queue, { durable: true, arguments: { "x-max-priority": 9 } });
    }
    client = createClient({ url: vhost.url, signingKey: KEY, confirmWindow: 100 });
  });

  after(async () => {
    await client?.close();
    await connection?.close().catch(() => {});
    await vhost?.remove();
  });

  async function open() {
    connection = await amqp.connect(vhost.url);
    connection.on("error", () => {}); // closed on purpose by a test below
    channel = await connection.createChannel();
  }

  async function takeAll(queue) {
    const taken = [];
    for (;;) {
      const message = await channel.get(queue, { noAck: true });
      if (!message) return taken;
      taken.push(message);
    }
  }

  function verified(fields) {
    const signature = sign(KEY, senderDocument(fields));
    const state = stateDocument(signature, fields.options);
    return (
      fields.options.signature === signature &&
      (state === null ? !("state_signature" in fields.options) : fields.options.state_signature === sign(KEY, state))
    );
  }

  test("send publishes one signed, persistent, prioritised message to the actor's queue", async () => {
    // When a service sends an email with a priority and an idempotency key
    const id = await client.send(
      "notifications.send_email",
      { user_id: 7, template: "welcome" },
      { priority: "high", idempotencyKey: "welcome:7" },
    );
    // Then the queue holds it, as the wire format says
    const [message] = await takeAll("notifications");
    const fields = JSON.parse(message.content.toString("utf8"));
    assert.equal(fields.message_id, id);
    assert.equal(message.properties.messageId, id);
    assert.equal(message.properties.priority, 7);
    assert.equal(message.properties.deliveryMode, 2);
    assert.ok(Math.abs(message.properties.timestamp - Date.now() / 1000) < 600);
    assert.ok(verified(fields));
    schemas.validateMessage({
      exchange: message.fields.exchange,
      routing_key: message.fields.routingKey,
      properties: {
        delivery_mode: message.properties.deliveryMode,
        priority: message.properties.priority,
        timestamp: message.properties.timestamp,
        content_type: message.properties.contentType,
      },
      body: fields,
    });
    // And the same idempotency key gives the same id
    assert.equal(
      await client.send("notifications.send_email", { user_id: 7, template: "welcome" }, { idempotencyKey: "welcome:7" }),
      id,
    );
    await takeAll("notifications");
  });

  test("a delayed message goes to the delay queue", async () => {
    const id = await client.send("notifications.send_sms", { user_id: 7, template: "iep_reminder" }, { delay: 3600 });
    const [message] = await takeAll("notifications.DQ");
    const fields = JSON.parse(message.content.toString("utf8"));
    assert.equal(fields.message_id, id);
    assert.equal(fields.queue_name, "notifications.DQ");
    assert.ok(fields.options.eta > Date.now() + 3_500_000);
    assert.ok(verified(fields));
  });

  test("sendMany publishes every message, confirmed, through a window smaller than the batch", async () => {
    // When 1,000 emails are sent at once (ten windows of 100)
    const items = Array.from({ length: 1000 }, (_, i) => ({
      actorName: "notifications.send_email",
      payload: { user_id: i + 1, template: "welcome" },
      priority: i % 2 ? "low" : "normal",
    }));
    const ids = await client.sendMany(items);
    // Then each has its id, and all are in the queue once sendMany resolved
    assert.equal(new Set(ids).size, 1000);
    const { messageCount } = await channel.checkQueue("notifications");
    assert.equal(messageCount, 1000);
    const taken = await takeAll("notifications");
    assert.deepEqual(new Set(taken.map((m) => m.properties.messageId)), new Set(ids));
  });

  test("concurrent sends share one connection and are all confirmed", async () => {
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.send("notifications.send_email", { user_id: i + 1, template: "welcome" })),
    );
    const taken = await takeAll("notifications");
    assert.deepEqual(new Set(taken.map((m) => m.properties.messageId)), new Set(ids));
    assert.equal(taken.length, 20);
  });

  test("a queue no worker declared is refused, saying how to declare it", async () => {
    await assert.rejects(
      client.send("media.process_image", { asset_id: 1, sizes: ["small"] }),
      (error) => error instanceof PublishError && /queue "media" does not exist.*edujobs queues declare/.test(error.message),
    );
    // And the client still publishes afterwards
    await client.send("notifications.send_email", { user_id: 1, template: "welcome" });
    await waitUntil(async () => (await channel.checkQueue("notifications")).messageCount === 1, "the message");
    await takeAll("notifications");
  });

  test("messages RabbitMQ refuses (nack) are a PublishError counting them", async () => {
    // Given a queue that takes one message and refuses any more (x-overflow reject-publish nacks)
    for (const queue of ["reports", "reports.DQ"]) {
      await channel.assertQueue(queue, { arguments: { "x-max-length": 1, "x-overflow": "reject-publish" } });
    }
    const item = { actorName: "reports.generate_system_health_summary", payload: {} };
    // When three are sent at once, Then the two refused ones are reported
    await assert.rejects(
      client.sendMany([item, item, item]),
      (error) => error instanceof PublishError && /RabbitMQ refused 2 messages \(nack\)/.test(error.message),
    );
    assert.equal((await channel.checkQueue("reports")).messageCount, 1);
  });

  test("a message RabbitMQ cannot route (its queue deleted) is a PublishError, not lost silently", async () => {
    // Given a queue the client has checked once, then deleted by an operator
    await channel.deleteQueue("reports");
    await channel.assertQueue("reports", {});
    await client.send("reports.generate_system_health_summary", {});
    await channel.deleteQueue("reports");
    // When a message is sent to it, Then RabbitMQ returns it and the client says so
    await assert.rejects(
      client.send("reports.generate_system_health_summary", {}),
      (error) => error instanceof PublishError && /could not route 1 messages/.test(error.message),
    );
  });

  test("after its connection is closed by RabbitMQ, the client reconnects and publishes", async () => {
    await client.send("notifications.send_email", { user_id: 1, template: "welcome" });
    // When RabbitMQ closes the client's connection (a restart, an operator)
    // (wait until both connections are listed before closing any: closing them one by one as they
    // appear never sees two at once)
    await waitUntil(async () => (await vhost.connectionCount()) >= 2, "the test's and the client's connections listed");
    assert.equal(await vhost.closeConnections(), 2);
    // Then the next send reconnects and is confirmed
    await open();
    const id = await client.send("notifications.send_email", { user_id: 2, template: "welcome" });
    const ids = (await takeAll("notifications")).map((m) => m.properties.messageId);
    assert.ok(ids.includes(id));
  });

  test("RabbitMQ unreachable is a PublishError saying so", async () => {
    const nowhere = createClient({ url: "amqp://guest:guest@127.0.0.1:1/", signingKey: KEY });
    await assert.rejects(
      nowhere.send("notifications.send_email", { user_id: 1, template: "welcome" }),
      (error) => error instanceof PublishError && /could not publish to RabbitMQ/.test(error.message),
    );
    await nowhere.close();
  });
});
