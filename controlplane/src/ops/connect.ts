/**
 * The common connection flags and the connection itself. The read-only
 * "auditor" user (its own NATS account, see @meshlane/proto accounts) is
 * enough for every command.
 */
import { existsSync } from 'node:fs';
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import { CliError, messageOf } from './errors.js';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';

export interface BusFlags {
  url: string;
  user?: string;
  password?: string;
  ca?: string;
  /** Request and connect timeout (ms). */
  timeoutMs: number;
}

/** parseArgs option specs of the common flags. */
export const commonOptions = {
  nats: { type: 'string' },
  'nats-user': { type: 'string' },
  'nats-password': { type: 'string' },
  'nats-ca': { type: 'string' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const COMMON_HELP = `Connection (every command):
  --nats URL             NATS server(s), comma-separated (env MESHLANE_NATS_URL,
                         default ${DEFAULT_NATS_URL})
  --nats-user USER       NATS user (env MESHLANE_NATS_USER); read-only "auditor" is enough
  --nats-password PASS   NATS password (env MESHLANE_NATS_PASSWORD)
  --nats-ca FILE         CA bundle to verify the server's TLS certificate (env MESHLANE_NATS_CA)
  --timeout S            seconds to wait for NATS to connect or answer (default 5)
  -h, --help             this text`;

type Env = Record<string, string | undefined>;

export function busFlags(v: { nats?: string; 'nats-user'?: string; 'nats-password'?: string; 'nats-ca'?: string; timeout?: string }, env: Env): BusFlags {
  const user = v['nats-user'] ?? env.MESHLANE_NATS_USER;
  const password = v['nats-password'] ?? env.MESHLANE_NATS_PASSWORD;
  const ca = v['nats-ca'] ?? env.MESHLANE_NATS_CA;
  const seconds = Number(v.timeout ?? '5');
  if (!Number.isFinite(seconds) || seconds <= 0) throw new CliError(`--timeout must be a positive number of seconds, got ${v.timeout}`);
  if (ca !== undefined && !existsSync(ca)) throw new CliError(`--nats-ca ${ca}: no such file`);
  if (password !== undefined && user === undefined) throw new CliError('--nats-password needs --nats-user');
  return {
    url: v.nats ?? env.MESHLANE_NATS_URL ?? DEFAULT_NATS_URL,
    timeoutMs: Math.round(seconds * 1000),
    ...(user !== undefined ? { user } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(ca !== undefined ? { ca } : {}),
  };
}

/** Connects, or throws a CliError naming the server and what failed. */
export async function connectBus(f: BusFlags, o: { follow: boolean }): Promise<NatsConnection> {
  const opts: ConnectionOptions = {
    servers: f.url.split(',').map((s) => s.trim()),
    name: 'meshlane-cli',
    timeout: f.timeoutMs,
    // One-shot commands fail fast; a tail rides out NATS restarts.
    ...(o.follow ? { maxReconnectAttempts: -1, reconnectTimeWait: 1000 } : { reconnect: false }),
    ...(f.user !== undefined ? { user: f.user, pass: f.password ?? '' } : {}),
    ...(f.ca !== undefined ? { tls: { caFile: f.ca } } : {}),
  };
  try {
    return await connect(opts);
  } catch (err) {
    const msg = messageOf(err);
    if (/authorization|authentication|auth/i.test(msg) || (err instanceof Error && err.name === 'AuthorizationError')) {
      throw new CliError(`NATS at ${f.url} refused the credentials${f.user !== undefined ? ` of user ${f.user}` : ' (none given: try --nats-user/--nats-password)'}: ${msg}`);
    }
    throw new CliError(`cannot reach NATS at ${f.url}: ${msg}`);
  }
}
