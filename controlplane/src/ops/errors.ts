/** Errors the CLI reports to the operator: a message that names what went wrong, and an exit code. */

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}

/** The message of anything thrown, with the cause's when it adds something. */
export function messageOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : '';
  return cause && !err.message.includes(cause) ? `${err.message}: ${cause}` : err.message;
}

function names(err: unknown, name: string): boolean {
  return err instanceof Error && (err.name === name || (err.cause instanceof Error && err.cause.name === name));
}

/** Turns a NATS/JetStream failure during `what` into an operator-readable CliError. */
export function explain(err: unknown, what: string): CliError {
  if (err instanceof CliError) return err;
  const msg = messageOf(err);
  if (names(err, 'PermissionViolationError') || /permissions violation/i.test(msg)) {
    return new CliError(`NATS denied ${what}: ${msg} (the read-only auditor account may read, never write)`);
  }
  if (/stream not found|bucket not found/i.test(msg)) return new CliError(`${what}: ${msg} (has the control plane set up the bus?)`);
  if (/jetstream not enabled|no responders|503/i.test(msg)) return new CliError(`${what}: JetStream does not answer (${msg})`);
  if (/timeout/i.test(msg)) return new CliError(`${what}: no answer from NATS in time (${msg})`);
  return new CliError(`${what}: ${msg}`);
}
