import { isIP } from 'node:net';

/** 16 bytes in network order; IPv4 becomes ::ffff:a.b.c.d like the kernel's dual-stack view. */
export function ipToBytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  const family = isIP(ip);
  if (family === 4) {
    out[10] = 0xff;
    out[11] = 0xff;
    ip.split('.').forEach((part, i) => {
      out[12 + i] = Number(part);
    });
    return out;
  }
  if (family !== 6) throw new Error(`not an IP address: ${ip}`);
  let text = ip;
  const v4tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4tail?.[1]) {
    const b = ipToBytes(v4tail[1]);
    const hi = b.readUInt16BE(12).toString(16);
    const lo = b.readUInt16BE(14).toString(16);
    text = text.slice(0, -v4tail[1].length) + `${hi}:${lo}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(fill).fill('0'), ...tailGroups];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** Inverse of ipToBytes: v4-mapped addresses print as dotted quads. */
export function bytesToIp(b: Buffer): string {
  const v4mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (v4mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // RFC 5952: compress the longest run of two or more zero groups.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/**
 * Refuses what would let one address pass for another: IPv6 zone ids
 * (`fe80::1%eth0`), IPv4-mapped or -compatible IPv6 spellings of an IPv4
 * address (`::ffff:10.0.0.1` is 10.0.0.1 in the maps), and any text that
 * is not the address's canonical form (RFC 5952 for IPv6, no leading zeros).
 */
export function canonicalIp(text: string): Buffer {
  if (text.includes('%')) throw new Error(`zone ids are not allowed: ${text}`);
  const family = isIP(text);
  if (!family) throw new Error(`not an IP address: ${text}`);
  const b = ipToBytes(text);
  if (family === 6 && b.subarray(0, 10).every((x) => x === 0) && ((b[10] === 0xff && b[11] === 0xff) || (b[10] === 0 && b[11] === 0 && !b.subarray(12).every((x) => x === 0) && text.includes('.')))) {
    throw new Error(`IPv4-mapped IPv6 addresses are not allowed (use the IPv4 address): ${text}`);
  }
  const canonical = bytesToIp(b);
  if (canonical !== text) throw new Error(`not in canonical form: ${text} (write ${canonical})`);
  return b;
}

export interface Cidr {
  /** Network address, 16 bytes (v4-mapped for IPv4). */
  addr: Buffer;
  /** Prefix length over the 128-bit form (IPv4 /n becomes 96 + n). */
  bits: number;
}

export function parseCidr(text: string): Cidr {
  const [ip, len, extra] = text.split('/');
  if (!ip || extra !== undefined) throw new Error(`not a CIDR: ${text}`);
  if (ip.includes('%')) throw new Error(`zone ids are not allowed: ${text}`);
  const family = isIP(ip);
  if (!family) throw new Error(`not a CIDR: ${text}`);
  const max = family === 4 ? 32 : 128;
  const n = len === undefined ? max : Number(len);
  if (!Number.isInteger(n) || n < 0 || n > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new Error(`bad prefix length in ${text}`);
  }
  const bits = family === 4 ? 96 + n : n;
  const addr = ipToBytes(ip);
  if (family === 6 && addr.subarray(0, 10).every((x) => x === 0) && addr[10] === 0xff && addr[11] === 0xff) {
    throw new Error(`IPv4-mapped IPv6 ranges are not allowed (use the IPv4 range): ${text}`);
  }
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    addr[i] = (addr[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return { addr, bits };
}
