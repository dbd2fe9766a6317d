// For cross-language tests (tests/unit/test_node_canonical.py): each stdin line is a JSON value;
// print its canonical JSON (RFC 8785) as this package makes it, as a JSON string, or
// {"refused": <why>} when the package refuses it.
import { createInterface } from "node:readline";

import { canonicalJson } from "../lib/canonical.js";

for await (const line of createInterface({ input: process.stdin })) {
  let answer;
  try {
    answer = JSON.stringify(canonicalJson(JSON.parse(line)));
  } catch (error) {
    answer = JSON.stringify({ refused: error.message });
  }
  process.stdout.write(`${answer}\n`);
}
