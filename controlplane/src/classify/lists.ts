/**
 * Port and CIDR lists parsed the way Istio parses its traffic annotations
 * (pkg/kube/inject/validate.go, which the injector and istio-cni both apply):
 *
 * - ports: the whole value is trimmed, split on ",", each item trimmed and
 *   read as a base-10 uint16; "" is the empty list; an empty item ("80,")
 *   or anything else unparsable is an error;
 * - CIDRs: split on "," with no trimming, each item must satisfy Go's
 *   netip.ParsePrefix (address "/" bits; no zone; no leading zeros);
 *   "" is the empty list;
 * - "*" (exactly, untrimmed) means every port / every destination, and is
 *   only accepted where Istio accepts it (include lists).
 *
 * Errors throw CaptureConfigError; the caller decides what a pod with an
 * unreadable setting is (see capture.ts).
 */
import { isIP } from 'node:net';
import { parseCidr, type CidrSelector, type PortSelector } from '@meshlane/proto';
import { CaptureConfigError } from './errors.js';

/** One port, Go strconv.ParseUint(strings.TrimSpace(s), 10, 16) semantics. */
export function parsePort(source: string, text: string): number {
  const t = text.trim();
  if (!/^[0-9]{1,5}$/.test(t)) throw new CaptureConfigError(source, text, 'not a port number');
  const n = Number(t);
  if (n > 65535) throw new CaptureConfigError(source, text, 'port out of range');
  return n;
}

/**
 * Port list. Port 0 is syntactically valid for Istio but never carries TCP
 * traffic, so it is dropped: the result holds ports 1..65535 only.
 */
export function parsePortList(source: string, text: string): number[] {
  const t = text.trim();
  if (t === '') return [];
  return sortedUnique(t.split(',').map((item) => inList(source, text, item, parsePort)).filter((p) => p !== 0));
}

/** "*" or a port list ("" = no port). */
export function parsePortSelector(source: string, text: string): PortSelector {
  return text === '*' ? '*' : parsePortList(source, text);
}

/** One CIDR, Go netip.ParsePrefix semantics (stricter than parseCidr in proto). */
export function parseOneCidr(source: string, text: string): string {
  const slash = text.indexOf('/');
  if (slash < 0) throw new CaptureConfigError(source, text, 'no "/" in CIDR');
  const addr = text.slice(0, slash);
  const bits = text.slice(slash + 1);
  if (addr.includes('%')) throw new CaptureConfigError(source, text, 'zone not allowed in CIDR');
  const family = isIP(addr);
  if (family === 0) throw new CaptureConfigError(source, text, 'bad address in CIDR');
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128)) {
    throw new CaptureConfigError(source, text, 'bad prefix length in CIDR');
  }
  try {
    parseCidr(text);
  } catch (err) {
    throw new CaptureConfigError(source, text, (err as Error).message);
  }
  return text;
}

export function parseCidrList(source: string, text: string): string[] {
  if (text === '') return [];
  return [...new Set(text.split(',').map((item) => inList(source, text, item, parseOneCidr)))];
}

/** "*" or a CIDR list ("" = no destination). */
export function parseCidrSelector(source: string, text: string): CidrSelector {
  return text === '*' ? '*' : parseCidrList(source, text);
}

/** One item of a list; an error names the whole value and the item. */
function inList<T>(source: string, text: string, item: string, parse: (source: string, item: string) => T): T {
  try {
    return parse(source, item);
  } catch (err) {
    if (err instanceof CaptureConfigError && item !== text) throw new CaptureConfigError(source, text, `item ${JSON.stringify(item)}: ${err.detail}`);
    throw err;
  }
}

export function sortedUnique(ports: Iterable<number>): number[] {
  return [...new Set(ports)].sort((a, b) => a - b);
}
