// Message signatures, wire format v1: the same documents and HMACs as contracts/signing.py.
//
// `signature` is the HMAC-SHA256 (lowercase hex, keyed with the key's UTF-8 bytes) of the sender
// document's canonical JSON: the envelope and every option but the state options and the two
// signatures, with queue_name stripped of ".DQ". `state_signature`, present exactly when a state
// option is, covers {"signature": ..., "state": {<state options>}}.

import { createHmac } from "node:crypto";

import { canonicalJson } from "./canonical.js";
import { EdujobsError } from "./errors.js";

export const SIGNATURE_OPTION = "signature";
export const STATE_SIGNATURE_OPTION = "state_signature";

/** Options that change between attempts, covered by `state_signature`. */
export const STATE_OPTIONS = new Set([
  "eta",
  "retries",
  "requeue_timestamp",
  "first_failure_at",
  "circuit_delays",
  "requeued_from",
  "_sentry_headers",
]);

export function baseQueue(queueName) {
  return queueName.endsWith(".DQ") ? queueName.slice(0, -3) : queueName;
}

/** The document `signature` covers. */
export function senderDocument(fields) {
  const options = {};
  for (const [name, value] of Object.entries(fields.options)) {
    if (!STATE_OPTIONS.has(name) && name !== SIGNATURE_OPTION && name !== STATE_SIGNATURE_OPTION) {
      options[name] = value;
    }
  }
  return {
    actor_name: fields.actor_name,
    args: fields.args,
    kwargs: fields.kwargs,
    message_id: fields.message_id,
    message_timestamp: fields.message_timestamp,
    options,
    queue_name: baseQueue(fields.queue_name),
  };
}

/** The document `state_signature` covers, or null when the options hold no state. */
export function stateDocument(signature, options) {
  const state = {};
  let any = false;
  for (const [name, value] of Object.entries(options)) {
    if (STATE_OPTIONS.has(name)) {
      state[name] = value;
      any = true;
    }
  }
  return any ? { signature, state } : null;
}

/** HMAC-SHA256 (lowercase hex) of a document's canonical JSON under `key` (a string: its UTF-8 bytes). */
export function sign(key, document) {
  return createHmac("sha256", Buffer.from(key, "utf8")).update(canonicalJson(document), "utf8").digest("hex");
}

/** Sign a new message in place: its options get `signature`, and `state_signature` when they hold state. */
export function signMessage(key, fields) {
  if (!key) throw new EdujobsError("the signing key must not be empty");
  const options = fields.options;
  if (SIGNATURE_OPTION in options || STATE_SIGNATURE_OPTION in options) {
    throw new EdujobsError("the message is signed already");
  }
  const signature = sign(key, senderDocument(fields));
  options[SIGNATURE_OPTION] = signature;
  const state = stateDocument(signature, options);
  if (state !== null) options[STATE_SIGNATURE_OPTION] = sign(key, state);
  return fields;
}
