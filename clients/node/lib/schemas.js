// The actors' JSON Schemas, as `edujobs contracts export DIR` writes them: one file per actor,
// `<actor name>.schema.json`, with its queue and default priority under `x-edujobs`.
//
// Payloads are validated with Ajv (draft 2020-12, which pydantic emits) before anything is
// published. Defaults are filled in, as the Python client's pydantic validation does, so that a
// message from Node carries the same kwargs as one from Python.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

import { ContractError, EdujobsError, UnknownActorError } from "./errors.js";

const SUFFIX = ".schema.json";
// In the edujobs repository, `make schemas` keeps them in docs/schemas.
const REPOSITORY_SCHEMAS = fileURLToPath(new URL("../../../docs/schemas", import.meta.url));

export function defaultSchemasDir() {
  const dir = process.env.EDUJOBS_SCHEMAS_DIR || (existsSync(REPOSITORY_SCHEMAS) ? REPOSITORY_SCHEMAS : null);
  if (!dir) {
    throw new EdujobsError(
      "no JSON Schemas: pass schemasDir (or set EDUJOBS_SCHEMAS_DIR) to the directory " +
        "`edujobs contracts export DIR` wrote",
    );
  }
  return dir;
}

function fieldOf(error) {
  const parts = error.instancePath.split("/").slice(1).map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"));
  if (error.keyword === "required") parts.push(error.params.missingProperty);
  if (error.keyword === "additionalProperties") parts.push(error.params.additionalProperty);
  return parts.join(".") || "(payload)";
}

function problemOf(error) {
  switch (error.keyword) {
    case "required":
      return "field required";
    case "additionalProperties":
      return "extra field not permitted";
    case "enum":
      return `must be one of ${error.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
    case "const":
      return `must be ${JSON.stringify(error.params.allowedValue)}`;
    default:
      return error.message;
  }
}

export class Schemas {
  /** Load every actor schema in `dir`. */
  constructor(dir = defaultSchemasDir()) {
    this.dir = dir;
    this.ajv = new Ajv2020({ allErrors: true, strict: false, useDefaults: true });
    addFormats(this.ajv);
    this.actors = new Map();
    let names;
    try {
      names = readdirSync(dir).filter((name) => name.endsWith(SUFFIX)).sort();
    } catch (e) {
      throw new EdujobsError(`cannot read the JSON Schemas in ${dir}: ${e.message}`);
    }
    for (const name of names) {
      const schema = JSON.parse(readFileSync(join(dir, name), "utf8"));
      const meta = schema["x-edujobs"];
      if (meta?.actor_name) {
        this.actors.set(meta.actor_name, { ...meta, schema });
      }
      this.ajv.addSchema(schema, schema.$id ?? name);
    }
    if (this.actors.size === 0) {
      throw new EdujobsError(`no actor schema (*${SUFFIX} with x-edujobs) in ${dir}: run \`edujobs contracts export ${dir}\``);
    }
    this.validators = new Map();
  }

  /** The actor's queue, default priority and schema, or UnknownActorError listing the known ones. */
  actor(actorName) {
    const actor = this.actors.get(actorName);
    if (!actor) {
      const known = [...this.actors.keys()].join(", ");
      throw new UnknownActorError(`unknown actor ${JSON.stringify(actorName)}; known actors: ${known}`);
    }
    return actor;
  }

  /** The payload as the actor's keyword arguments (a copy, defaults filled in), or ContractError naming each bad field. */
  validate(actorName, payload) {
    const actor = this.actor(actorName);
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      throw new ContractError(`invalid payload for ${actorName}: (payload): must be an object`, [
        { field: "(payload)", problem: "must be an object" },
      ]);
    }
    let validate = this.validators.get(actorName);
    if (!validate) {
      validate = this.ajv.getSchema(actor.schema.$id) ?? this.ajv.compile(actor.schema);
      this.validators.set(actorName, validate);
    }
    let kwargs;
    try {
      kwargs = structuredClone(payload);
    } catch (e) {
      throw new ContractError(`invalid payload for ${actorName}: (payload): not plain JSON data (${e.message})`, [
        { field: "(payload)", problem: "not plain JSON data" },
      ]);
    }
    if (validate(kwargs)) return kwargs;
    const seen = new Set();
    const problems = [];
    for (const error of validate.errors) {
      const problem = { field: fieldOf(error), problem: problemOf(error) };
      const key = `${problem.field}\u0000${problem.problem}`;
      if (!seen.has(key)) {
        seen.add(key);
        problems.push(problem);
      }
    }
    const text = problems.map((p) => `${p.field}: ${p.problem}`).join("; ");
    throw new ContractError(`invalid payload for ${actorName}: ${text}`, problems);
  }

  /** Validate a whole message (exchange, routing_key, properties, body) against message.schema.json. */
  validateMessage(message) {
    const validate = this.ajv.getSchema("edujobs:message");
    if (!validate) throw new EdujobsError(`no message.schema.json in ${this.dir}`);
    if (validate(message)) return;
    const text = validate.errors.map((e) => `${fieldOf(e)}: ${problemOf(e)}`).join("; ");
    throw new ContractError(`the message does not match message.schema.json: ${text}`);
  }
}
