// One error root, as the Python side has (contracts/errors.py).

/** The root of every error this package raises. */
export class EdujobsError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** Raised when a payload does not match the actor's JSON Schema; `message` names every bad field. */
export class ContractError extends EdujobsError {
  constructor(message, problems = []) {
    super(message);
    /** One `{field, problem}` per bad field. */
    this.problems = problems;
  }
}

/** Raised for an actor the exported schemas do not know; the message lists the known ones. */
export class UnknownActorError extends EdujobsError {}

/** Raised when RabbitMQ did not confirm a message (nacked, unroutable, no confirm in time, connection lost). */
export class PublishError extends EdujobsError {}
