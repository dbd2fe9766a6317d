// The published signature vectors (docs/signature-vectors.json), byte for byte.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { canonicalJson, CanonicalizationError, messageIdFor, senderDocument, signMessage, stateDocument } from "../index.js";

const VECTORS = JSON.parse(readFileSync(new URL("../../../docs/signature-vectors.json", import.meta.url), "utf8"));

test("the vectors are there", () => {
  assert.ok(VECTORS.vectors.length >= 3);
});

for (const vector of VECTORS.vectors) {
  test(`vector: ${vector.name}`, () => {
    const fields = structuredClone(vector.message);
    // The canonical documents are the published ones, byte for byte
    assert.equal(canonicalJson(senderDocument(fields)), vector.sender_document);
    signMessage(vector.key, fields);
    assert.equal(fields.options.signature, vector.signature);
    const state = stateDocument(vector.signature, fields.options);
    if (vector.state_signature === undefined) {
      assert.equal(state, null);
      assert.equal(fields.options.state_signature, undefined);
    } else {
      assert.equal(canonicalJson(state), vector.state_document);
      assert.equal(fields.options.state_signature, vector.state_signature);
    }
  });
}

for (const item of VECTORS.refused ?? []) {
  test(`refused: ${item.name}`, () => {
    // What JSON cannot carry exactly is refused, not signed as something else
    const value = JSON.parse(item.json);
    assert.throws(() => canonicalJson(value), CanonicalizationError);
  });
}

for (const item of VECTORS.message_ids ?? []) {
  test(`message id of ${item.actor_name} / ${item.idempotency_key}`, () => {
    assert.equal(messageIdFor(item.actor_name, item.idempotency_key), item.message_id);
  });
}

test("a message is never signed twice", () => {
  const fields = structuredClone(VECTORS.vectors[0].message);
  signMessage("k", fields);
  assert.throws(() => signMessage("k", fields), /signed already/);
});
