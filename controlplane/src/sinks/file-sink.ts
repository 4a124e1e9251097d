/**
 * Writes each node's desired state to DIR/<node>.json (atomically: write,
 * then rename), the format `meshlane-worker run --state` reads. A real mode
 * for clusters without the bus, and what the demo and tests use to hand
 * states to workers.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeUpdate } from '../reconcile/reconciler.js';

export class FileSink {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  write(u: NodeUpdate): void {
    const path = join(this.dir, `${u.node}.json`);
    writeFileSync(`${path}.tmp`, `${JSON.stringify(u.state(), null, 1)}\n`);
    renameSync(`${path}.tmp`, path);
  }
}
