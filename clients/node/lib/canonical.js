// RFC 8785 (JCS) canonical JSON, as edujobs signs it (contracts/signing.py, docs/wire-format.md).
//
// JCS is defined on ECMAScript's own JSON.stringify: numbers and strings are written exactly as
// JSON.stringify writes them, object members are sorted by the UTF-16 code units of their names
// (JavaScript's default sort). What the Python side refuses is refused here too, rather than
// signed as something else: integers past 2^53 - 1, NaN and the infinities, lone surrogates,
// BigInt and values JSON has no form for.

import { EdujobsError } from "./errors.js";

export class CanonicalizationError extends EdujobsError {}

const LONE_SURROGATE = /\p{Surrogate}/u;
const MAX_DEPTH = 100;

function quote(text, path) {
  if (LONE_SURROGATE.test(text)) {
    throw new CanonicalizationError(`${path || "(value)"}: a string with a lone surrogate cannot be signed`);
  }
  return JSON.stringify(text);
}

function write(value, path, depth) {
  const where = path || "(value)";
  if (depth > MAX_DEPTH) throw new CanonicalizationError(`${where}: nested too deep`);
  if (value === null) return "null";
  if (value !== undefined && typeof value.toJSON === "function") value = value.toJSON();
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new CanonicalizationError(`${where}: ${value} is not JSON`);
      // JSON.stringify writes a whole number below 1e21 without an exponent: past 2^53 - 1, the
      // worker reads it as an integer JSON cannot carry exactly, and refuses it.
      if (Number.isInteger(value) && !Number.isSafeInteger(value) && Math.abs(value) < 1e21) {
        throw new CanonicalizationError(
          `${where}: ${value} is past 2^53 - 1 and cannot be carried exactly (send it as a string)`,
        );
      }
      return JSON.stringify(value); // ECMAScript's Number::toString: 1, 1e-7, 1e+21; -0 is 0
    case "string":
      return quote(value, path);
    case "object": {
      if (Array.isArray(value)) {
        return `[${value.map((item, i) => write(item, `${path}[${i}]`, depth + 1)).join(",")}]`;
      }
      const members = [];
      for (const key of Object.keys(value).sort()) {
        const item = value[key];
        if (item === undefined) continue; // as JSON.stringify does: the body will not have it either
        members.push(`${quote(key, path)}:${write(item, path ? `${path}.${key}` : key, depth + 1)}`);
      }
      return `{${members.join(",")}}`;
    }
    default:
      throw new CanonicalizationError(`${where}: a ${typeof value} is not JSON`);
  }
}

/** `value` as RFC 8785 canonical JSON text (encode it as UTF-8 to sign it). */
export function canonicalJson(value) {
  return write(value, "", 0);
}
