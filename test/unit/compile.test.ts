/** node-worker - NodeState -> map entries, and the minimal diff between two states. */
import { describe, expect, it } from 'vitest';
import { NODE_STATE_API_VERSION, type Endpoint, type NodeState } from '@meshlane/proto';
import { compileNodeState, diffEntries } from '@meshlane/node-worker';

function ep(name: string, i: number, over: Partial<Endpoint> = {}): Endpoint {
  return {
    pod: `ns/${name}`,
    uid: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
    ips: [`10.0.0.${i}`, `fd00::${i}`],
    proxyUid: 1337,
    accelerate: true,
    appSockets: 'always',
    outboundPort: 15001,
    inboundPort: 15006,
    inbound: { includePorts: '*', excludePorts: [15020, 15021, 15090] },
    outbound: { excludePorts: [], includeCidrs: '*', excludeCidrs: [] },
    ...over,
  };
}

function state(endpoints: Endpoint[], generation = 1): NodeState {
  return {
    apiVersion: NODE_STATE_API_VERSION,
    kind: 'NodeState',
    node: 'n',
    generation,
    switches: { enabled: true, appSockets: true, maxQueuedBytes: 0 },
    endpoints,
  };
}

describe('node-worker - compile and diff', () => {
  it('expands every endpoint IP, port rule and CIDR', () => {
    const d = compileNodeState(state([ep('a', 1, { outbound: { excludePorts: [3306], includeCidrs: ['10.0.0.0/8'], excludeCidrs: ['10.96.0.0/12'] } }), ep('b', 2)]));
    expect(d.maps.ml_endpoints.size).toBe(4);
    // a: 3 inbound excludes + 1 outbound exclude per IP; b: 3 per IP.
    expect(d.maps.ml_port_rules.size).toBe(2 * 4 + 2 * 3);
    expect(d.maps.ml_cidr_exclude.size).toBe(2);
    expect(d.maps.ml_cidr_include.size).toBe(2);
  });

  it('grows linearly with the endpoints: 250 pods are 250 times one pod', () => {
    const one = compileNodeState(state([ep('p0', 1)])).maps;
    const many = compileNodeState(state(Array.from({ length: 250 }, (_, i) => ep(`p${i}`, i + 1)))).maps;
    for (const name of Object.keys(one) as Array<keyof typeof one>) expect(many[name].size, name).toBe(250 * one[name].size);
  });

  it('is deterministic, so the same state gives no diff', () => {
    const s = state([ep('a', 1), ep('b', 2)]);
    const x = compileNodeState(s).maps;
    const y = compileNodeState(structuredClone(s)).maps;
    for (const name of Object.keys(x) as Array<keyof typeof x>) expect(diffEntries(x[name], y[name])).toBeUndefined();
  });

  it('a one-pod change touches only that pod', () => {
    const pods = Array.from({ length: 110 }, (_, i) => ep(`p${i}`, i + 1));
    const before = compileNodeState(state(pods)).maps;
    const after = compileNodeState(state([...pods.slice(0, 109), ep('new', 200)], 2)).maps;
    const eps = diffEntries(before.ml_endpoints, after.ml_endpoints)!;
    expect(eps.upserts).toHaveLength(2);
    expect(eps.deletes).toHaveLength(2);
    const rules = diffEntries(before.ml_port_rules, after.ml_port_rules)!;
    expect(rules.upserts).toHaveLength(2 * 3);
    expect(rules.deletes).toHaveLength(2 * 3);
  });

  it('an opt-out flips the endpoint value and nothing else', () => {
    const before = compileNodeState(state([ep('a', 1), ep('b', 2)])).maps;
    const after = compileNodeState(state([ep('a', 1, { accelerate: false }), ep('b', 2)])).maps;
    const d = diffEntries(before.ml_endpoints, after.ml_endpoints)!;
    expect(d.upserts).toHaveLength(2);
    expect(d.deletes).toHaveLength(0);
    expect(diffEntries(before.ml_port_rules, after.ml_port_rules)).toBeUndefined();
  });
});
