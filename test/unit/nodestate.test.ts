/** proto - NodeState validation: every refusal names the field it is about. */
import { describe, expect, it } from 'vitest';
import { LIMITS, NODE_STATE_API_VERSION, ValidationError, bytesToIp, ipToBytes, parseCidr, parseNodeState } from '@meshlane/proto';

function valid(): Record<string, unknown> {
  return {
    apiVersion: NODE_STATE_API_VERSION,
    kind: 'NodeState',
    node: 'node-a',
    generation: 3,
    switches: { enabled: true, appSockets: true, maxQueuedBytes: 1 << 20 },
    endpoints: [
      {
        pod: 'default/a',
        uid: '00000000-0000-4000-8000-000000000001',
        ips: ['10.0.0.1', 'fd00::1'],
        proxyUid: 1337,
        accelerate: true,
        appSockets: 'never',
        outboundPort: 15001,
        inboundPort: 15006,
        inbound: { includePorts: '*', excludePorts: [15020] },
        outbound: { excludePorts: [], includeCidrs: ['10.0.0.0/8'], excludeCidrs: ['10.96.0.0/12'] },
      },
      {
        pod: 'default/b',
        uid: '00000000-0000-4000-8000-000000000002',
        ips: ['10.0.0.2'],
        proxyUid: 1337,
        accelerate: true,
        appSockets: 'auto',
        outboundPort: 15001,
        inboundPort: 15006,
        inbound: { includePorts: [8080], excludePorts: [] },
        outbound: { excludePorts: [3306], includeCidrs: '*', excludeCidrs: [] },
      },
    ],
  };
}

function refusal(mutate: (s: any) => void, node?: string): ValidationError {
  const s = valid();
  mutate(s);
  try {
    parseNodeState(s, node);
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return err as ValidationError;
  }
  throw new Error('accepted');
}

describe('proto - NodeState', () => {
  it('accepts a valid state and returns a typed copy', () => {
    const s = parseNodeState(valid(), 'node-a');
    expect(s.endpoints).toHaveLength(2);
    expect(s.endpoints[1]?.inbound.includePorts).toEqual([8080]);
  });

  const cases: Array<[string, (s: any) => void, string]> = [
    ['unknown version', (s) => (s.apiVersion = 'meshlane.io/v9'), '$.apiVersion'],
    ['unknown top-level field', (s) => (s.extra = 1), '$.extra'],
    ['negative generation', (s) => (s.generation = -1), '$.generation'],
    ['switch not boolean', (s) => (s.switches.enabled = 'yes'), '$.switches.enabled'],
    ['bad IP', (s) => (s.endpoints[0].ips[1] = 'fd00::zz'), '$.endpoints[0].ips[1]'],
    ['no IP', (s) => (s.endpoints[1].ips = []), '$.endpoints[1].ips'],
    ['port out of range', (s) => (s.endpoints[1].outbound.excludePorts = [0]), '$.endpoints[1].outbound.excludePorts[0]'],
    ['bad CIDR', (s) => (s.endpoints[0].outbound.excludeCidrs = ['10.96.0.0/33']), '$.endpoints[0].outbound.excludeCidrs[0]'],
    ['bad pod name', (s) => (s.endpoints[0].pod = 'a'), '$.endpoints[0].pod'],
    ['duplicate pod', (s) => (s.endpoints[1].pod = 'default/a'), '$.endpoints[1].pod'],
    ['IP owned twice', (s) => (s.endpoints[1].ips = ['10.0.0.1']), '$.endpoints[1].ips[0]'],
    ['IPv4-mapped IPv6 alias of a pod IP', (s) => (s.endpoints[1].ips = ['::ffff:10.0.0.1']), '$.endpoints[1].ips[0]'],
    ['IPv6 zone id', (s) => (s.endpoints[0].ips[1] = 'fe80::1%eth0'), '$.endpoints[0].ips[1]'],
    ['non-canonical IPv6 (would dodge the duplicate check)', (s) => (s.endpoints[1].ips = ['fd00:0:0::1']), '$.endpoints[1].ips[0]'],
    ['two IPs of one family', (s) => (s.endpoints[1].ips = ['10.0.0.2', '10.0.0.3']), '$.endpoints[1].ips[1]'],
    ['three IPs', (s) => (s.endpoints[1].ips = ['10.0.0.2', 'fd00::2', 'fd00::3']), '$.endpoints[1].ips'],
    ['IPv4-mapped CIDR', (s) => (s.endpoints[0].outbound.excludeCidrs = ['::ffff:10.0.0.0/104']), '$.endpoints[0].outbound.excludeCidrs[0]'],
    ['CIDR with a zone id', (s) => (s.endpoints[0].outbound.excludeCidrs = ['fe80::%eth0/64']), '$.endpoints[0].outbound.excludeCidrs[0]'],
    ['a pod name over 253 characters', (s) => (s.endpoints[0].pod = `default/${'a'.repeat(254)}`), '$.endpoints[0].pod'],
    ['a namespace over 63 characters', (s) => (s.endpoints[0].pod = `${'n'.repeat(64)}/a`), '$.endpoints[0].pod'],
    ['a node name over 253 characters', (s) => (s.node = 'n'.repeat(254)), '$.node'],
    ['more endpoints than a node can have', (s) => (s.endpoints = Array.from({ length: LIMITS.endpoints + 1 }, () => s.endpoints[0])), '$.endpoints'],
    ['a port list over the bound', (s) => (s.endpoints[0].outbound.excludePorts = Array.from({ length: LIMITS.portsPerList + 1 }, () => 1)), '$.endpoints[0].outbound.excludePorts'],
    ['a CIDR list over the bound', (s) => (s.endpoints[0].outbound.excludeCidrs = Array.from({ length: LIMITS.cidrsPerList + 1 }, () => '10.0.0.0/8')), '$.endpoints[0].outbound.excludeCidrs'],
    ['a v1alpha1 pairs list', (s) => (s.pairs = []), '$.pairs'],
    ['uid out of range', (s) => (s.endpoints[0].proxyUid = 2 ** 32), '$.endpoints[0].proxyUid'],
    ['unknown endpoint field', (s) => (s.endpoints[0].captureMode = 'TPROXY'), '$.endpoints[0].captureMode'],
  ];
  for (const [what, mutate, field] of cases) {
    it(`refuses ${what}, naming ${field}`, () => {
      expect(refusal(mutate).field).toBe(field);
    });
  }

  it('refuses a state for another node', () => {
    const e = refusal(() => {}, 'node-b');
    expect(e.field).toBe('$.node');
    expect(e.message).toMatch(/node-a.*node-b/);
  });
});

describe('proto - addresses', () => {
  it('stores IPv4 v4-mapped and prints both families back', () => {
    expect(ipToBytes('10.1.2.3').toString('hex')).toBe('00000000000000000000ffff0a010203');
    for (const ip of ['10.1.2.3', 'fd00::1', '::1', 'fe80::1:2:0:0:3', '2001:db8::']) expect(bytesToIp(ipToBytes(ip))).toBe(ip);
  });

  it('masks CIDRs and counts IPv4 prefixes over the mapped form', () => {
    const c = parseCidr('10.96.7.7/12');
    expect(c.bits).toBe(108);
    expect(bytesToIp(c.addr)).toBe('10.96.0.0');
    expect(parseCidr('fd00::ff/64').bits).toBe(64);
  });
});
