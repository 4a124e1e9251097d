/**
 * node-worker - the behaviour probe's pure parts: the rule that decides
 * which app sockets of 'auto' pods may join, the classification of the
 * probe program's raw output (controls included), and the bounded form on
 * the status subject.
 */
import { describe, expect, it } from 'vitest';
import { behaviourForBus, classifyBehaviour, decideAppSockets, unknownBehaviour, type BehaviourResults } from '@meshlane/node-worker';
import { API_VERSION, parseWorkerStatus, ValidationError } from '@meshlane/proto';

const SAFE: BehaviourResults = { blockingRecv: 'safe', fionread: 'exact', splice: 'sees-redirected', rcvlowat: 'honoured', peek: 'works', waitall: 'honoured' };

/** What bpf/out/behaviour-probe printed on 6.18.44 (this project's VM). */
const RAW_6_18 = {
  version: 1,
  kernel: '6.18.44-fc-v1045',
  netns: 'private',
  attach: 'link',
  blockingRecv: {
    signal: { plain: 'blocked', sockhash: 'eagain' },
    duplexRedirected: { plain: 'blocked', sockhash: 'blocked', redirected: 65536 },
    writeSpace: { plain: 'blocked', sockhash: 'eagain' },
    finWait: { plain: 'blocked', sockhash: 'eagain' },
  },
  fionread: { plain: 1000, tcpOnly: 0, tcpOnlyRedirected: 0, redirectedOnly: 1000, redirectedOnlyRedirected: 1000, both: 500, bothRedirected: 500, bothFirstRead: 'redirected' },
  splice: { tcp: 1000, redirected: -11, redirectedRedirected: 1000 },
  rcvlowat: { plain: { pollReadable: false, recv: 1100 }, sockhash: { pollReadable: true, recv: 100 } },
  waitall: { plain: 1100, sockhash: 100 },
  peek: { plain: { peeked: 100, read: 100, same: true }, sockhash: { peeked: 100, read: 100, same: true }, both: { peeked: 100, peekedFirst: 'redirected', thenRead: 200 } },
  deadlineHit: false,
};

/** A kernel where the sockhash socket behaves exactly as TCP does. */
function rawLikeTcp(): Record<string, unknown> {
  const raw = structuredClone(RAW_6_18) as Record<string, unknown>;
  raw.blockingRecv = Object.fromEntries(['signal', 'duplexRedirected', 'writeSpace', 'finWait'].map((w) => [w, { plain: 'blocked', sockhash: 'blocked' }]));
  raw.fionread = { ...RAW_6_18.fionread, tcpOnly: 1000, both: 1500, bothFirstRead: 'tcp' };
  raw.splice = { ...RAW_6_18.splice, redirected: 1000 };
  raw.rcvlowat = { plain: RAW_6_18.rcvlowat.plain, sockhash: { pollReadable: false, recv: 1100 } };
  raw.waitall = { plain: 1100, sockhash: 1100 };
  return raw;
}

describe('node-worker - behaviour probe: the app-socket rule', () => {
  it('lets non-blocking app sockets join only when FIONREAD is exact', () => {
    for (const blockingRecv of ['safe', 'eagain', 'unknown'] as const) {
      const d = decideAppSockets({ ...SAFE, blockingRecv });
      expect(d.appSocketsAuto).toBe('nonblocking-only');
      expect(d.reason).toMatch(/FIONREAD is exact/);
      expect(d.reason).toMatch(/non-blocking/);
    }
  });

  it('switches app sockets of auto pods off for any other FIONREAD, whatever else holds', () => {
    for (const fionread of ['redirected-only', 'tcp-only', 'unknown'] as const) {
      const d = decideAppSockets({ ...SAFE, fionread });
      expect(d.appSocketsAuto, fionread).toBe('off');
      expect(d.reason).toMatch(/FIONREAD/);
      expect(d.reason).toMatch(/opt in/);
    }
  });

  it('keeps auto off while splice or SO_RCVLOWAT differ, naming them', () => {
    for (const over of [{ splice: 'misses-redirected' as const }, { rcvlowat: 'ignored' as const }, { splice: 'unknown' as const }]) {
      const d = decideAppSockets({ ...SAFE, ...over });
      expect(d.appSocketsAuto).toBe('off');
      expect(d.reason).toMatch(/FIONREAD is exact, but (splice\(2\)|SO_RCVLOWAT)/);
    }
  });

  it('names the hazards non-blocking apps can still meet', () => {
    const d = decideAppSockets({ ...SAFE, blockingRecv: 'eagain', peek: 'consumes', waitall: 'short-read' });
    expect(d.appSocketsAuto).toBe('nonblocking-only');
    expect(d.reason).toMatch(/spurious EAGAIN/);
    expect(d.reason).toMatch(/MSG_PEEK consumes/);
    expect(d.reason).toMatch(/MSG_WAITALL returns short/);
    expect(decideAppSockets(SAFE).reason).not.toMatch(/opt out/);
  });

  it('decides off when the probe could not run', () => {
    const r = unknownBehaviour('behaviour-probe not found');
    expect(r.decisions.appSocketsAuto).toBe('off');
    expect(r.probeError).toMatch(/not found/);
    for (const k of ['blockingRecv', 'fionread', 'splice', 'rcvlowat', 'peek', 'waitall'] as const) expect(r[k]).toBe('unknown');
  });
});

describe('node-worker - behaviour probe: classification of the raw output', () => {
  it('classifies what 6.18 showed', () => {
    const r = classifyBehaviour(RAW_6_18, 'ignored', 812);
    expect(r).toMatchObject({
      kernel: '6.18.44-fc-v1045',
      blockingRecv: 'eagain',
      fionread: 'redirected-only',
      splice: 'misses-redirected',
      rcvlowat: 'ignored',
      peek: 'works',
      waitall: 'short-read',
      decisions: { appSocketsAuto: 'off' },
      details: { eagainOn: ['signal', 'writeSpace', 'finWait'], fionreadCounts: { tcpOnly: 0, redirectedOnly: 1000, both: 500 }, readOrder: 'redirected-first', netns: 'private', attach: 'link', ms: 812 },
    });
    expect(r.probeError).toBeUndefined();
  });

  it('classifies what the 6.1 and 6.12 guests showed (FIONREAD: TCP only on 6.1.192, exact on 6.12.117)', () => {
    const on61 = classifyBehaviour({ ...RAW_6_18, kernel: '6.1.0-57-amd64', attach: 'map', fionread: { ...RAW_6_18.fionread, tcpOnly: 1000, redirectedOnly: 0, both: 1000 } });
    expect(on61).toMatchObject({ blockingRecv: 'eagain', fionread: 'tcp-only', decisions: { appSocketsAuto: 'off' }, details: { attach: 'map' } });
    const on612 = classifyBehaviour({ ...RAW_6_18, kernel: '6.12.117+deb12-amd64', fionread: { ...RAW_6_18.fionread, tcpOnly: 1000, both: 1500 } });
    // FIONREAD is right on 6.12.117, but splice and SO_RCVLOWAT are not.
    expect(on612).toMatchObject({ blockingRecv: 'eagain', fionread: 'exact', splice: 'misses-redirected', decisions: { appSocketsAuto: 'off' } });
    expect(on612.decisions.reason).toMatch(/FIONREAD is exact, but splice\(2\) misses redirected bytes and SO_RCVLOWAT is ignored/);
  });

  it('classifies a kernel that behaves like TCP', () => {
    const r = classifyBehaviour(rawLikeTcp());
    expect(r).toMatchObject({ ...SAFE, decisions: { appSocketsAuto: 'nonblocking-only' }, details: { eagainOn: [], readOrder: 'tcp-first' } });
  });

  it('reads FIONREAD that misses redirected bytes as tcp-only', () => {
    const raw = rawLikeTcp();
    raw.fionread = { ...(raw.fionread as object), redirectedOnly: 0, both: 1000 };
    expect(classifyBehaviour(raw).fionread).toBe('tcp-only');
  });

  it('trusts no result whose control failed', () => {
    const raw = structuredClone(RAW_6_18) as Record<string, unknown>;
    // plain TCP did not keep waiting in any case: the harness, not the kernel, is wrong
    raw.blockingRecv = Object.fromEntries(['signal', 'duplexRedirected', 'writeSpace', 'finWait'].map((w) => [w, { plain: 'eagain', sockhash: 'eagain' }]));
    raw.fionread = { ...RAW_6_18.fionread, plain: 0 };
    raw.splice = { ...RAW_6_18.splice, tcp: -11 };
    raw.rcvlowat = { ...RAW_6_18.rcvlowat, plain: { pollReadable: true, recv: 100 } };
    raw.waitall = { plain: 100, sockhash: 100 };
    raw.peek = { ...RAW_6_18.peek, plain: { peeked: -11, read: 100, same: false } };
    const r = classifyBehaviour(raw);
    expect([r.blockingRecv, r.fionread, r.splice, r.rcvlowat, r.waitall, r.peek]).toEqual(['unknown', 'unknown', 'unknown', 'unknown', 'unknown', 'unknown']);
    expect(r.decisions.appSocketsAuto).toBe('off');
  });

  it('needs the redirect to have really happened', () => {
    const raw = structuredClone(RAW_6_18) as Record<string, unknown>;
    raw.fionread = { ...RAW_6_18.fionread, redirectedOnlyRedirected: 0 };
    expect(classifyBehaviour(raw).fionread).toBe('unknown');
  });

  it('needs every wakeup tried before calling blocking recv safe', () => {
    const raw = rawLikeTcp();
    raw.blockingRecv = { signal: { plain: 'blocked', sockhash: 'blocked' }, finWait: { skipped: 'deadline' } };
    expect(classifyBehaviour(raw).blockingRecv).toBe('unknown');
    raw.blockingRecv = { finWait: { plain: 'blocked', sockhash: 'eagain' } };
    expect(classifyBehaviour(raw).blockingRecv).toBe('eagain');
  });

  it('turns malformed output into unknown, never a throw', () => {
    for (const raw of [null, 42, 'x', [], { version: 1 }, { blockingRecv: { signal: 'eagain' }, fionread: { plain: '1000' } }]) {
      const r = classifyBehaviour(raw, 'k');
      expect(r.kernel).toBe('k');
      expect([r.blockingRecv, r.fionread, r.splice, r.rcvlowat, r.peek, r.waitall].every((x) => x === 'unknown')).toBe(true);
      expect(r.decisions.appSocketsAuto).toBe('off');
    }
  });

  it('carries the probe program\'s own errors', () => {
    const r = classifyBehaviour({ ...RAW_6_18, errors: 'adding a socket to the probe sockhash: Device or resource busy', deadlineHit: true });
    expect(r.probeError).toMatch(/resource busy.*deadline/);
  });
});

describe('node-worker - behaviour on the status subject', () => {
  const status = (behaviour: unknown) => ({
    apiVersion: API_VERSION,
    kind: 'WorkerStatus',
    node: 'n1',
    time: new Date(0).toISOString(),
    appliedGeneration: 1,
    desiredGeneration: 1,
    bus: 'connected',
    counters: {},
    maps: {},
    kernel: {},
    behaviour,
  });

  it('is accepted in its bounded form', () => {
    const b = behaviourForBus(classifyBehaviour(RAW_6_18));
    expect(b).toEqual({
      kernel: '6.18.44-fc-v1045',
      results: { blockingRecv: 'eagain', fionread: 'redirected-only', splice: 'misses-redirected', rcvlowat: 'ignored', peek: 'works', waitall: 'short-read' },
      appSocketsAuto: 'off',
      reason: expect.stringMatching(/FIONREAD/),
    });
    expect(parseWorkerStatus(status(b), 'n1').behaviour).toEqual(b);
    // optional: workers before the probe send none
    expect(parseWorkerStatus({ ...status(undefined), behaviour: undefined }).behaviour).toBeUndefined();
  });

  it('refuses anything unbounded or malformed, naming the field', () => {
    const good = behaviourForBus(classifyBehaviour(RAW_6_18));
    const bad: Array<[unknown, string]> = [
      ['x', '$.behaviour'],
      [{ ...good, appSocketsAuto: 'on' }, '$.behaviour.appSocketsAuto'],
      [{ ...good, reason: 'r'.repeat(5000) }, '$.behaviour.reason'],
      [{ ...good, kernel: 7 }, '$.behaviour.kernel'],
      [{ ...good, results: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`p${i}`, 'x'])) }, '$.behaviour.results'],
      [{ ...good, results: { fionread: 'x'.repeat(40) } }, '$.behaviour.results.fionread'],
      [{ ...good, results: { 'bad key!': 'x' } }, '$.behaviour.results'],
    ];
    for (const [b, field] of bad) {
      try {
        parseWorkerStatus(status(b));
        expect.unreachable(`accepted ${JSON.stringify(b).slice(0, 80)}`);
      } catch (err) {
        expect(err).toBeInstanceOf(ValidationError);
        expect((err as ValidationError).field).toBe(field);
      }
    }
  });
});
