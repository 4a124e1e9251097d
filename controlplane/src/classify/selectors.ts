/**
 * Conservative combination of capture settings read from more than one
 * source (annotations and istio-iptables args): what is captured is what
 * every source captures; what is excluded is what any source excludes.
 */
import { parseCidr, type Cidr, type CidrSelector, type PortSelector } from '@meshlane/proto';
import { sortedUnique } from './lists.js';

export function intersectPorts(a: PortSelector, b: PortSelector): PortSelector {
  if (a === '*') return b === '*' ? '*' : [...b];
  if (b === '*') return [...a];
  const inB = new Set(b);
  return sortedUnique(a.filter((p) => inB.has(p)));
}

/** outer contains inner (both already masked, IPv4 as v4-mapped). */
function contains(outer: Cidr, inner: Cidr): boolean {
  if (outer.bits > inner.bits) return false;
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, outer.bits - i * 8));
    const mask = (0xff << (8 - keep)) & 0xff;
    if (((inner.addr[i] ?? 0) & mask) !== (outer.addr[i] ?? 0)) return false;
  }
  return true;
}

/**
 * Destinations in both selectors. Two prefixes either nest or are disjoint,
 * so the intersection of two lists is, for every nesting pair, the narrower.
 */
export function intersectCidrs(a: CidrSelector, b: CidrSelector): CidrSelector {
  if (a === '*') return b === '*' ? '*' : [...b];
  if (b === '*') return [...a];
  const out = new Set<string>();
  for (const x of a) {
    const cx = parseCidr(x);
    for (const y of b) {
      const cy = parseCidr(y);
      if (contains(cy, cx)) out.add(x);
      else if (contains(cx, cy)) out.add(y);
    }
  }
  return [...out];
}
