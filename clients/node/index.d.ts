// Type declarations of @edujobs/client (hand-written; the package is plain JavaScript, ESM).

/** A named priority and its AMQP value: critical 9, high 7, normal 5, low 3, bulk 1. */
export type Priority = "critical" | "high" | "normal" | "low" | "bulk";
export declare const PRIORITIES: Readonly<Record<Priority, number>>;
export declare const DELAY_SUFFIX: ".DQ";
export declare const STATE_OPTIONS: ReadonlySet<string>;

export interface ClientOptions {
  /** The RabbitMQ URL, as EDUJOBS_RABBITMQ_URL: amqp://user:password@host:5672/vhost */
  url: string;
  /** The signing key (EDUJOBS_SIGNING_KEY); a string is keyed by its UTF-8 bytes. */
  signingKey: string | Buffer;
  /**
   * The directory `edujobs contracts export DIR` wrote (one `<actor>.schema.json` per actor).
   * Default: EDUJOBS_SCHEMAS_DIR, else docs/schemas of the edujobs repository this package sits in.
   */
  schemasDir?: string;
  /** Unconfirmed messages kept in flight by sendMany (default 500). */
  confirmWindow?: number;
  /** How long to wait for RabbitMQ's confirms before a PublishError (default 30,000 ms). */
  confirmTimeoutMs?: number;
  /** Largest message body (default 262,144 bytes, the workers' EDUJOBS_MAX_PAYLOAD_BYTES). */
  maxPayloadBytes?: number;
}

export interface SendOptions {
  /** Default: the actor's (its schema's x-edujobs.priority). */
  priority?: Priority;
  /** Seconds to wait before it may run; or `eta`. */
  delay?: number;
  /** When it may run; or `delay`. */
  eta?: Date;
  /** The side effect's key (1-512 characters): the same key gives the same message id and one effect. */
  idempotencyKey?: string;
}

export interface SendItem extends SendOptions {
  actorName: string;
  payload: Record<string, unknown>;
}

export interface Client {
  /** Validate, sign and publish one message; resolves to its id once RabbitMQ confirmed it. */
  send(actorName: string, payload: Record<string, unknown>, options?: SendOptions): Promise<string>;
  /** Validate every item (nothing is published if one is invalid), publish all with a confirm window; resolves to their ids, in order. */
  sendMany(items: Iterable<SendItem>): Promise<string[]>;
  /** Close the connection. */
  close(): Promise<void>;
}

export declare function createClient(options: ClientOptions): Client;

/** The root of every error of this package. */
export declare class EdujobsError extends Error {}
/** A payload that does not match the actor's schema; the message names each bad field. */
export declare class ContractError extends EdujobsError {
  problems: { field: string; problem: string }[];
}
/** An actor the schemas do not know; the message lists the known ones. */
export declare class UnknownActorError extends EdujobsError {}
/** RabbitMQ did not confirm (nack, unroutable, missing queue, no confirm in time, unreachable). */
export declare class PublishError extends EdujobsError {}
/** A value JSON cannot carry exactly (an integer past 2^53 - 1, NaN, a lone surrogate...). */
export declare class CanonicalizationError extends EdujobsError {}

export interface BuiltMessage {
  messageId: string;
  queue: string;
  routingKey: string;
  body: Buffer;
  priority: number;
}

/** The actors' exported JSON Schemas, and validation against them. */
export declare class Schemas {
  constructor(dir?: string);
  dir: string;
  actor(actorName: string): { actor_name: string; queue: string; priority: Priority; schema: object };
  /** The payload as keyword arguments (a copy with the schema's defaults), or ContractError. */
  validate(actorName: string, payload: unknown): Record<string, unknown>;
  /** Check a whole message against message.schema.json (ContractError otherwise). */
  validateMessage(message: { exchange: string; routing_key: string; properties: object; body: object }): void;
}

/** Validate, sign and encode one message without publishing it (for a producer with its own AMQP connection). */
export declare function buildMessage(
  schemas: Schemas,
  signingKey: string | Buffer,
  item: SendItem,
  maxPayloadBytes?: number,
): BuiltMessage;

/** The id the client gives a message: UUID v5 of the actor and idempotency key, or a random UUID. */
export declare function messageIdFor(actorName: string, idempotencyKey?: string | null): string;

/** RFC 8785 canonical JSON of a value. */
export declare function canonicalJson(value: unknown): string;
/** The document `signature` covers. */
export declare function senderDocument(fields: Record<string, unknown>): Record<string, unknown>;
/** The document `state_signature` covers, or null without state. */
export declare function stateDocument(signature: string, options: Record<string, unknown>): Record<string, unknown> | null;
/** HMAC-SHA256 (hex) of a document's canonical JSON. */
export declare function sign(key: string | Buffer, document: unknown): string;
/** Sign a Dramatiq message in place (options.signature, and options.state_signature with state). */
export declare function signMessage<T extends { options: Record<string, unknown> }>(key: string | Buffer, fields: T): T;
