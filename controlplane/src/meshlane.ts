#!/usr/bin/env node
/** meshlane: the operator's CLI (see --help and src/ops/). */
import { CliError, messageOf } from './ops/errors.js';
import { EXPLAIN_HELP, PAIRS_HELP, STATUS_HELP, TAIL_HELP, explainCommand, pairsCommand, statusCommand, tailCommand, type Io } from './ops/commands.js';
import { COMMON_HELP } from './ops/connect.js';

const HELP = `meshlane: look at the meshlane bus (read-only; auditor credentials are enough)
and ask the control plane why a pod is or is not accelerated.

Usage:
  meshlane audit tail [--node N] [--json] [--since DURATION | --all]
                              follow deltas, worker statuses and audit events
  meshlane status [--json] [--stale-after DURATION]
                              per-node convergence; exit 1 when a node lags or is stale
  meshlane pairs --node N [--json]
                              a node's desired endpoints and its accelerated pairs
  meshlane explain NAMESPACE/POD [--controlplane URL] [--json] [--bus]
                              why a pod is or is not accelerated, from the control
                              plane's ops server; exit 1 when it is not
  meshlane COMMAND --help     a command's flags and output

Exit codes: 0 ok, 1 (status) some node not converged / (explain) the pod is not
accelerated, 2 an error (named on stderr).

${COMMON_HELP}`;

const HELPS: Record<string, string> = { 'audit tail': TAIL_HELP, status: STATUS_HELP, pairs: PAIRS_HELP, explain: EXPLAIN_HELP };

async function main(argv: string[]): Promise<number> {
  let onSignal: () => void = () => {};
  const interrupted = new Promise<void>((r) => (onSignal = r));
  process.once('SIGINT', () => onSignal());
  process.once('SIGTERM', () => onSignal());
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    // `meshlane audit tail | head`: the reader went away.
    if (err.code === 'EPIPE') process.exit(0);
  });
  const io: Io = {
    out: (l) => void process.stdout.write(`${l}\n`),
    err: (l) => void process.stderr.write(`${l}\n`),
    env: process.env,
    interrupted,
  };
  const [cmd, sub, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    const topic = cmd === 'help' && sub !== undefined ? HELPS[[sub, ...rest].join(' ')] : undefined;
    io.out(topic ?? HELP);
    return cmd === undefined ? 2 : 0;
  }
  switch (cmd) {
    case 'audit':
      if (sub !== 'tail') throw new CliError(`unknown command "audit ${sub ?? ''}": did you mean "audit tail"?`);
      return tailCommand(rest, io);
    case 'status':
      return statusCommand(sub === undefined ? [] : [sub, ...rest], io);
    case 'pairs':
      return pairsCommand(sub === undefined ? [] : [sub, ...rest], io);
    case 'explain':
      return explainCommand(sub === undefined ? [] : [sub, ...rest], io);
    default:
      throw new CliError(`unknown command "${cmd}" (commands: audit tail, status, pairs, explain; see meshlane --help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`meshlane: ${err instanceof CliError ? err.message : messageOf(err)}\n`);
    process.exit(err instanceof CliError ? err.exitCode : 2);
  },
);
