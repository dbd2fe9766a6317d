// edujobs' producer client for Node.js: the counterpart of Python's brokers.client.
//
//   const client = createClient({ url: "amqp://guest:guest@127.0.0.1:5672/", signingKey: process.env.EDUJOBS_SIGNING_KEY });
//   const id = await client.send("notifications.send_email", { user_id: 7, template: "welcome" }, { priority: "high" });
//   await client.close();
//
// A payload is validated against its actor's exported JSON Schema, the message is built in
// Dramatiq's format, signed (wire format v1, docs/wire-format.md) and published to the actor's
// queue (or its `.DQ` when delayed) on a confirm channel; `send` resolves once RabbitMQ confirmed.

import { createHash, randomUUID } from "node:crypto";

import amqp from "amqplib";

import { ContractError, EdujobsError, PublishError, UnknownActorError } from "./lib/errors.js";
import { Schemas } from "./lib/schemas.js";
import { signMessage } from "./lib/signing.js";

export { canonicalJson, CanonicalizationError } from "./lib/canonical.js";
export { senderDocument, sign, signMessage, stateDocument, STATE_OPTIONS } from "./lib/signing.js";
export { ContractError, EdujobsError, PublishError, Schemas, UnknownActorError };

/** Named priorities and their AMQP values (contracts/priorities.py). */
export const PRIORITIES = Object.freeze({ critical: 9, high: 7, normal: 5, low: 3, bulk: 1 });
export const DELAY_SUFFIX = ".DQ";

// uuid.uuid5(_ID_NAMESPACE, f"{actor_name}\x00{idempotency_key}") in brokers/client.py.
const ID_NAMESPACE = Buffer.from("7f1d3c528a434c1e9a535b0f2b7f9e10", "hex");

/** A fresh id, or the same id for the same actor and idempotency key (the Python client's, byte for byte). */
export function messageIdFor(actorName, idempotencyKey) {
  if (idempotencyKey === undefined || idempotencyKey === null) return randomUUID();
  const hash = createHash("sha1").update(ID_NAMESPACE).update(`${actorName}\u0000${idempotencyKey}`, "utf8").digest();
  const b = hash.subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function dueMs(nowMs, delay, eta) {
  if (delay !== undefined && delay !== null && eta !== undefined && eta !== null) {
    throw new EdujobsError("pass delay or eta, not both");
  }
  if (delay !== undefined && delay !== null) {
    if (typeof delay !== "number" || !Number.isFinite(delay) || delay < 0) {
      throw new EdujobsError(`delay must be a number of seconds >= 0, not ${JSON.stringify(delay)}`);
    }
    return nowMs + Math.floor(delay * 1000);
  }
  if (eta !== undefined && eta !== null) {
    const ms = eta instanceof Date ? eta.getTime() : NaN;
    if (!Number.isFinite(ms)) throw new EdujobsError("eta must be a valid Date");
    return ms;
  }
  return null;
}

/**
 * Validate, sign and encode one message: {messageId, queue, routingKey, body (Buffer), priority}.
 * Exported for tests and for producers with their own AMQP connection.
 */
const ITEM_FIELDS = new Set(["actorName", "payload", "priority", "delay", "eta", "idempotencyKey"]);

export function buildMessage(schemas, signingKey, item, maxPayloadBytes) {
  const unknown = Object.keys(item).filter((name) => !ITEM_FIELDS.has(name));
  if (unknown.length) {
    throw new EdujobsError(
      `unknown send option ${unknown.map((n) => JSON.stringify(n)).join(", ")}: expected priority, delay, eta, idempotencyKey`,
    );
  }
  const { actorName, payload, priority, delay, eta, idempotencyKey } = item;
  const actor = schemas.actor(actorName);
  const kwargs = schemas.validate(actorName, payload);
  const name = priority ?? actor.priority;
  if (!Object.hasOwn(PRIORITIES, name)) {
    throw new EdujobsError(`unknown priority ${JSON.stringify(name)}: expected one of ${Object.keys(PRIORITIES).join(", ")}`);
  }
  if (idempotencyKey !== undefined && idempotencyKey !== null) {
    if (typeof idempotencyKey !== "string" || idempotencyKey.length < 1 || idempotencyKey.length > 512) {
      throw new EdujobsError("idempotencyKey must be a string of 1 to 512 characters");
    }
  }
  const amqpPriority = PRIORITIES[name];
  const nowMs = Date.now();
  const options = { broker_priority: amqpPriority, priority_name: name };
  let routingKey = actor.queue;
  const due = dueMs(nowMs, delay, eta);
  if (due !== null && due > nowMs) {
    // eta drives Dramatiq's delay; not_before, signed with the envelope, keeps the message
    // delayed even if its delivery state were stripped on the way.
    options.eta = due;
    options.not_before = due;
    routingKey = actor.queue + DELAY_SUFFIX;
  }
  if (idempotencyKey !== undefined && idempotencyKey !== null) options.idempotency_key = idempotencyKey;
  const messageId = messageIdFor(actorName, idempotencyKey);
  const fields = {
    queue_name: routingKey,
    actor_name: actorName,
    args: [],
    kwargs,
    options,
    message_id: messageId,
    message_timestamp: nowMs,
  };
  signMessage(signingKey, fields);
  const body = Buffer.from(JSON.stringify(fields), "utf8");
  if (maxPayloadBytes && body.length > maxPayloadBytes) {
    throw new EdujobsError(
      `message for ${actorName} is ${body.length} bytes, over the ${maxPayloadBytes}-byte limit ` +
        "(EDUJOBS_MAX_PAYLOAD_BYTES): send ids, not data",
    );
  }
  return { messageId, queue: actor.queue, routingKey, body, priority: amqpPriority };
}

function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new PublishError(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

class Client {
  constructor({ url, signingKey, schemasDir, confirmWindow = 500, confirmTimeoutMs = 30_000, maxPayloadBytes = 262_144 }) {
    if (!url) throw new EdujobsError("url is required (the RabbitMQ URL, as EDUJOBS_RABBITMQ_URL)");
    if (!signingKey) throw new EdujobsError("signingKey is required (EDUJOBS_SIGNING_KEY)");
    if (!Number.isInteger(confirmWindow) || confirmWindow < 1) throw new EdujobsError("confirmWindow must be an integer >= 1");
    this.url = url;
    this.signingKey = signingKey;
    this.schemas = new Schemas(schemasDir);
    this.confirmWindow = confirmWindow;
    this.confirmTimeoutMs = confirmTimeoutMs;
    this.maxPayloadBytes = maxPayloadBytes;
    this.connecting = null;
    this.declared = new Set();
    this.closed = false;
  }

  /** Validate, sign and publish one message; resolve to its id once RabbitMQ has confirmed it. */
  async send(actorName, payload, options = {}) {
    const [id] = await this.sendMany([{ ...options, actorName, payload }]);
    return id;
  }

  /**
   * Validate every item first (nothing is published if one is invalid: the error says `item #N`),
   * then publish them all with up to `confirmWindow` unconfirmed in flight; resolve to their ids
   * in order once every one is confirmed.
   */
  async sendMany(items) {
    if (this.closed) throw new EdujobsError("the client is closed");
    const list = [...items];
    const built = list.map((item, index) => {
      try {
        return buildMessage(this.schemas, this.signingKey, item, this.maxPayloadBytes);
      } catch (e) {
        if (list.length > 1 && e instanceof EdujobsError) {
          const again = new e.constructor(`item #${index}: ${e.message}`, e.problems);
          throw again;
        }
        throw e;
      }
    });
    for (let attempt = 1; ; attempt++) {
      try {
        const state = await this.connect();
        for (const queue of new Set(built.map((m) => m.queue))) await this.ensureQueue(state.connection, queue);
        await this.publishAll(state, built);
        return built.map((m) => m.messageId);
      } catch (e) {
        if (e instanceof EdujobsError || e instanceof TypeError || e instanceof ReferenceError) throw e;
        // A lost connection: republishing may duplicate, never lose (the ids stay the same, so
        // the ledger dedupes side effects).
        this.reset();
        if (attempt >= 3) {
          throw new PublishError(
            `could not publish to RabbitMQ (${e.message}); is it running, and is the URL right?`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
      }
    }
  }

  async connect() {
    if (!this.connecting) {
      this.connecting = (async () => {
        const connection = await amqp.connect(this.url);
        const state = { connection, channel: null, returned: new Set(), broken: null, blocked: null };
        const onClose = (error) => {
          state.broken = error ?? new Error("connection closed");
          if (this.connecting === promise) this.connecting = null;
        };
        connection.on("error", onClose);
        connection.on("close", onClose);
        // A memory or disk alarm: publishes wait, and the confirm deadline says why.
        connection.on("blocked", (reason) => {
          state.blocked = reason;
        });
        connection.on("unblocked", () => {
          state.blocked = null;
        });
        const channel = await connection.createConfirmChannel();
        channel.on("error", onClose);
        // Unroutable (mandatory) messages come back before their confirm.
        channel.on("return", (message) => state.returned.add(message.properties.messageId));
        state.channel = channel;
        return state;
      })();
      const promise = this.connecting;
      promise.catch(() => {
        if (this.connecting === promise) this.connecting = null;
      });
    }
    return this.connecting;
  }

  async ensureQueue(connection, queue) {
    // Queues are declared by workers; a producer only checks that they exist, so that a message
    // is never published into the void. A 404 closes the probe channel, not the confirm channel.
    if (this.declared.has(queue)) return;
    const probe = await connection.createChannel();
    probe.on("error", () => {});
    try {
      for (const name of [queue, queue + DELAY_SUFFIX]) await probe.checkQueue(name);
    } catch (e) {
      if (e.code === 404) {
        throw new PublishError(
          `queue ${JSON.stringify(queue)} does not exist in RabbitMQ: run \`edujobs queues declare\` ` +
            "or start a worker once to declare the topology",
        );
      }
      throw e;
    }
    await probe.close().catch(() => {});
    this.declared.add(queue);
  }

  async publishAll(state, built) {
    const channel = state.channel;
    const inFlight = new Set();
    let nacked = 0;
    const confirmed = [];
    for (const message of built) {
      if (inFlight.size >= this.confirmWindow) {
        await withTimeout(
          Promise.race(inFlight),
          this.confirmTimeoutMs,
          `RabbitMQ confirmed none of ${this.confirmWindow} messages in flight within ${this.confirmTimeoutMs} ms`,
        ).catch((e) => {
          this.reset();
          throw e;
        });
      }
      if (state.broken) throw state.broken;
      const confirm = new Promise((resolve) => {
        channel.publish(
          "",
          message.routingKey,
          message.body,
          {
            persistent: true, // delivery_mode 2
            priority: message.priority,
            messageId: message.messageId,
            contentType: "application/json",
            contentEncoding: "utf-8",
            // Seconds, as AMQP has it: RabbitMQ's oldest-message age is read from it.
            timestamp: Math.floor(Date.now() / 1000),
            mandatory: true,
          },
          (error) => {
            if (error) nacked++;
            resolve();
          },
        );
      });
      const tracked = confirm.then(() => inFlight.delete(tracked));
      tracked.catch(() => {}); // a batch given up on must not leave unhandled rejections behind
      inFlight.add(tracked);
      confirmed.push(tracked);
    }
    // A channel that closes settles its unconfirmed publishes with an error; the deadline keeps a
    // broker that stops confirming (a memory or disk alarm) from hanging the producer.
    await withTimeout(
      Promise.all(confirmed),
      this.confirmTimeoutMs,
      `${inFlight.size} messages not confirmed by RabbitMQ within ${this.confirmTimeoutMs} ms` +
        (state.blocked ? ` (RabbitMQ blocked the connection: ${state.blocked})` : ""),
    ).catch((e) => {
      this.reset();
      throw e;
    });
    if (state.broken) throw state.broken; // lost on the way: published again by sendMany
    const returned = built.filter((m) => state.returned.delete(m.messageId)).length;
    if (returned) throw new PublishError(`RabbitMQ could not route ${returned} messages (is the queue declared?)`);
    if (nacked) throw new PublishError(`RabbitMQ refused ${nacked} messages (nack)`);
  }

  reset() {
    const connecting = this.connecting;
    this.connecting = null;
    if (connecting) {
      connecting.then(({ connection }) => connection.close()).catch(() => {});
    }
  }

  /** Close the connection (waits for it to close). */
  async close() {
    this.closed = true;
    const connecting = this.connecting;
    this.connecting = null;
    if (connecting) {
      const state = await connecting.catch(() => null);
      if (state && !state.broken) await state.connection.close().catch(() => {});
    }
  }
}

/** A producer bound to one RabbitMQ URL and signing key (see index.d.ts for the options). */
export function createClient(options) {
  return new Client(options);
}
