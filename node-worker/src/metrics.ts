/** Prometheus metrics and health endpoints of the worker. */
import { createServer, type Server } from 'node:http';
import { Gauge, Registry, Counter } from 'prom-client';
import type { Datapath } from './bpf/datapath.js';
import { readStatus } from './bpf/status.js';
import type { KernelFeatures } from './bpf/features.js';
import { BEHAVIOUR_PROBES, type BehaviourReport } from './bpf/behaviour.js';

export interface WorkerHealth {
  /** Programs attached and maps open. */
  live: () => boolean;
  /** A desired state has been applied. */
  ready: () => boolean;
}

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly stateErrors = new Counter({ name: 'meshlane_worker_state_errors_total', help: 'Desired states refused or failed to apply', registers: [this.registry] });
  readonly applies = new Counter({ name: 'meshlane_worker_applies_total', help: 'Desired states applied', registers: [this.registry] });
  readonly swept = new Counter({
    name: 'meshlane_worker_swept_entries_total',
    help: 'Side-table entries of sockets that closed without a close callback (another program cleared the flag), deleted by the sweep',
    labelNames: ['map'],
    registers: [this.registry],
  });
  readonly busErrors = new Counter({
    name: 'meshlane_worker_follow_errors_total',
    help: 'Failures while following the bus, by kind: bus (NATS unreachable, timeouts), rejected (a delta or snapshot refused), apply (a map write failed); each is retried',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  constructor(dp: Datapath, kernel?: KernelFeatures, behaviour?: BehaviourReport) {
    // The probe's decisions, one series each, value 1 (an "info" metric).
    const info = new Gauge({ name: 'meshlane_kernel_feature', help: 'Kernel feature probe decisions at start (value always 1)', labelNames: ['feature', 'value'], registers: [this.registry] });
    for (const [feature, value] of Object.entries(kernel ?? {})) info.set({ feature, value: String(value) }, 1);
    // The behaviour probe's results and the app-socket decision, the same way.
    const behaves = new Gauge({
      name: 'meshlane_worker_kernel_behaviour',
      help: 'Behaviour of sockhash sockets towards apps on this kernel, probed at start (value always 1); probe appSocketsAuto is the decision for app sockets of auto pods',
      labelNames: ['probe', 'result'],
      registers: [this.registry],
    });
    if (behaviour) {
      for (const probe of BEHAVIOUR_PROBES) behaves.set({ probe, result: behaviour[probe] }, 1);
      behaves.set({ probe: 'appSocketsAuto', result: behaviour.decisions.appSocketsAuto }, 1);
    }
    // One scrape collects four gauges: read the maps once for all of them
    // (counting entries walks every key of every map).
    let cached: { at: number; value: ReturnType<typeof readStatus> } | undefined;
    const status = () => {
      const now = Date.now();
      if (!cached || now - cached.at > 1000) cached = { at: now, value: readStatus(dp) };
      return cached.value;
    };
    new Gauge({
      name: 'meshlane_datapath_events_total',
      help: 'BPF decision counters (monotonic, summed over CPUs) by reason',
      labelNames: ['reason'],
      registers: [this.registry],
      collect() {
        const s = status();
        for (const [reason, v] of Object.entries(s.counters)) this.set({ reason }, v);
      },
    });
    new Gauge({
      name: 'meshlane_map_entries',
      help: 'Entries in each BPF map',
      labelNames: ['map'],
      registers: [this.registry],
      collect() {
        for (const [map, m] of Object.entries(status().maps)) if (m.entries !== null) this.set({ map }, m.entries);
      },
    });
    new Gauge({
      name: 'meshlane_map_capacity',
      help: 'max_entries of each BPF map',
      labelNames: ['map'],
      registers: [this.registry],
      collect() {
        for (const [map, m] of Object.entries(status().maps)) this.set({ map }, m.max);
      },
    });
    new Gauge({
      name: 'meshlane_applied_generation',
      help: 'Generation of the desired state in the maps',
      registers: [this.registry],
      collect() {
        this.set(status().config.generation);
      },
    });
  }

  serve(addr: string, health: WorkerHealth): Promise<Server> {
    const [host, portText] = addr.includes(':') ? [addr.slice(0, addr.lastIndexOf(':')) || '0.0.0.0', addr.slice(addr.lastIndexOf(':') + 1)] : ['0.0.0.0', addr];
    const server = createServer((req, res) => {
      const send = (code: number, body: string, type = 'text/plain') => {
        res.writeHead(code, { 'content-type': type });
        res.end(body);
      };
      if (req.url === '/healthz') return send(health.live() ? 200 : 503, health.live() ? 'ok\n' : 'not live\n');
      if (req.url === '/readyz') return send(health.ready() ? 200 : 503, health.ready() ? 'ok\n' : 'no desired state applied yet\n');
      if (req.url === '/metrics') {
        this.registry.metrics().then(
          (m) => send(200, m, this.registry.contentType),
          (err: Error) => send(500, `${err.message}\n`),
        );
        return;
      }
      send(404, 'not found\n');
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(portText), host, () => resolve(server));
    });
  }
}
