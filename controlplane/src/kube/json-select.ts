/**
 * Keeps a few members of a large JSON document without parsing the rest.
 *
 * A page of 500 injected pods is ~7 MB of JSON, half of it managedFields; JSON.parse spends most of
 * its time building objects we would throw away at once (managedFields alone is ~3/4 of the parse
 * time: thousands of distinct `f:`/`k:` keys). Scanning bytes is several times cheaper than building
 * objects, so this walks the UTF-8 bytes, copies out only the selected members and hands the (small)
 * result to JSON.parse. What is skipped is scanned for structure only (strings, escapes, bracket
 * depth), which is enough to find where it ends and to notice truncated input.
 */

/**
 * What to keep of a value: `true` keeps it whole. An object keeps, of a JSON object, only the listed
 * members (each by its own selection), of a JSON array each element by this same selection, and a
 * scalar as it is.
 */
export type Selection = true | SelectionObject;

const WHERE: unique symbol = Symbol('where');

export interface SelectionObject {
  readonly [member: string]: Selection;
  /** See where(). */
  readonly [WHERE]?: { member: string; values: readonly string[] };
}

/**
 * `sel`, and of an array of such objects only the elements whose `member` is one of `values` (a
 * string, compared byte for byte with its JSON.stringify encoding: a document spelling it with
 * other escapes does not match; Go's encoder and names like env variables never differ). Elements
 * without it are left out too. Outside arrays the condition is ignored.
 */
export function where(sel: SelectionObject, member: string, values: Iterable<string>): SelectionObject {
  return { ...sel, [WHERE]: { member, values: [...values] } };
}

/** Input that is not a well-formed JSON document (as far as the scan can tell). */
export class JsonSelectError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = 'JsonSelectError';
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

/** A selection compiled for byte comparison of member names (no string made per key scanned). */
interface Compiled {
  byLength: Map<number, Array<{ name: Uint8Array; next: Compiled | true }>>;
  byName: Map<string, Compiled | true>;
  /** where(): the member's name bytes and the accepted values as JSON (quoted) bytes. */
  where: { name: Uint8Array; values: Uint8Array[] } | undefined;
}

const compiledCache = new WeakMap<object, Compiled>();

const encodeName = (name: string): Uint8Array => Buffer.from(JSON.stringify(name).slice(1, -1), 'utf8');

function compile(sel: SelectionObject): Compiled {
  const cached = compiledCache.get(sel);
  if (cached) return cached;
  const w = sel[WHERE];
  const c: Compiled = {
    byLength: new Map(),
    byName: new Map(),
    where: w ? { name: encodeName(w.member), values: w.values.map((v) => Buffer.from(JSON.stringify(v), 'utf8')) } : undefined,
  };
  for (const [name, s] of Object.entries(sel)) {
    const next = s === true ? true : compile(s);
    // Member names are matched against their raw bytes in the document, i.e. as JSON encodes them.
    const bytes = encodeName(name);
    const list = c.byLength.get(bytes.length) ?? [];
    list.push({ name: bytes, next });
    c.byLength.set(bytes.length, list);
    c.byName.set(name, next);
  }
  compiledCache.set(sel, c);
  return c;
}

/**
 * Buffers reused from one call to the next. Large, freshly allocated buffers are costly (page faults
 * on every new mapping, then garbage collection), and a list reads many pages of similar size.
 */
export interface Scratch {
  buf: Buffer | undefined;
}

/** Where a split array's elements ended up in the output. */
interface Split {
  name: Uint8Array;
  /** Output range of the whole array value. */
  start: number;
  end: number;
  /** Output [start, end) of each element, flattened. */
  elements: number[];
  found: boolean;
}

class Selector {
  private out: Buffer;
  private pos = 0;
  /** Containers (objects and arrays) open around the current position. */
  private depth = 0;
  /** Set by object(): the object just selected failed its where() condition. */
  private dropped = false;

  constructor(
    private readonly src: Buffer,
    private readonly scratch: Scratch | undefined,
    private readonly split: Split | undefined,
  ) {
    // Selections are typically a fifth of their input; grown on demand.
    const want = Math.min(src.length, Math.max(4096, src.length >>> 2));
    this.out = scratch?.buf && scratch.buf.length >= want ? scratch.buf : Buffer.allocUnsafe(want);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.out.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.pos + n));
    this.out.copy(bigger, 0, 0, this.pos);
    this.out = bigger;
  }

  run(sel: Selection): Buffer {
    let i = this.ws(0);
    i = this.value(i, sel === true ? true : compile(sel));
    i = this.ws(i);
    if (i !== this.src.length) throw new JsonSelectError('unexpected data after the document', i);
    if (this.scratch) this.scratch.buf = this.out;
    return this.out.subarray(0, this.pos);
  }

  private ws(i: number): number {
    const s = this.src;
    while (i < s.length) {
      const c = s[i];
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      i++;
    }
    return i;
  }

  private emit(from: number, to: number): void {
    const n = to - from;
    this.ensure(n);
    if (n < 32) {
      for (let k = from; k < to; k++) this.out[this.pos++] = this.src[k] as number;
    } else {
      this.src.copy(this.out, this.pos, from, to);
      this.pos += n;
    }
  }

  private byte(c: number): void {
    this.ensure(1);
    this.out[this.pos++] = c;
  }

  private expect(i: number, c: number, what: string): void {
    if (i >= this.src.length) throw new JsonSelectError(`unexpected end of input, expected ${what}`, i);
    if (this.src[i] !== c) throw new JsonSelectError(`expected ${what}`, i);
  }

  /** Index just past the string starting at i (which holds the opening quote). */
  private string(i: number): number {
    const s = this.src;
    for (let k = i + 1; k < s.length; k++) {
      const c = s[k];
      if (c === BACKSLASH) k++;
      else if (c === QUOTE) return k + 1;
    }
    throw new JsonSelectError('unterminated string', i);
  }

  /** Index just past the value starting at i. */
  private skip(i: number): number {
    const s = this.src;
    const c = s[i];
    if (c === QUOTE) return this.string(i);
    if (c !== LBRACE && c !== LBRACKET) {
      // number, true, false, null: up to the next delimiter (what it spells is JSON.parse's to judge,
      // when kept; a stray `<` of an HTML error page is refused here)
      if (c === undefined || !(c === 0x2d || (c >= 0x30 && c <= 0x39) || c === 0x74 || c === 0x66 || c === 0x6e)) {
        throw new JsonSelectError(c === undefined ? 'unexpected end of input' : 'expected a value', i);
      }
      let k = i;
      while (k < s.length) {
        const d = s[k];
        if (d === COMMA || d === RBRACE || d === RBRACKET || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09) break;
        k++;
      }
      return k;
    }
    let depth = 0;
    for (let k = i; k < s.length; k++) {
      const d = s[k];
      if (d === QUOTE) {
        for (k++; k < s.length; k++) {
          const e = s[k];
          if (e === BACKSLASH) k++;
          else if (e === QUOTE) break;
        }
      } else if (d === LBRACE || d === LBRACKET) {
        depth++;
      } else if (d === RBRACE || d === RBRACKET) {
        if (--depth === 0) return k + 1;
      }
    }
    throw new JsonSelectError('unexpected end of input inside a value', i);
  }

  private value(i: number, sel: Compiled | true): number {
    if (i >= this.src.length) throw new JsonSelectError('unexpected end of input, expected a value', i);
    const c = this.src[i];
    if (sel !== true && c === LBRACE) return this.object(i, sel);
    if (sel !== true && c === LBRACKET) return this.array(i, sel);
    const end = this.skip(i);
    this.emit(i, end);
    return end;
  }

  private lookup(keyStart: number, keyEnd: number, sel: Compiled): Compiled | true | undefined {
    const s = this.src;
    const len = keyEnd - keyStart;
    for (let k = keyStart; k < keyEnd; k++) {
      if (s[k] === BACKSLASH) {
        // An escaped name: compare decoded (Go's encoder never escapes plain member names, so rare).
        const name: unknown = JSON.parse(Buffer.from(s.subarray(keyStart - 1, keyEnd + 1)).toString('utf8'));
        return typeof name === 'string' ? sel.byName.get(name) : undefined;
      }
    }
    const candidates = sel.byLength.get(len);
    if (!candidates) return undefined;
    outer: for (const cand of candidates) {
      const n = cand.name;
      for (let k = 0; k < len; k++) if (s[keyStart + k] !== n[k]) continue outer;
      return cand.next;
    }
    return undefined;
  }

  private same(from: number, to: number, bytes: Uint8Array): boolean {
    if (to - from !== bytes.length) return false;
    for (let k = 0; k < bytes.length; k++) if (this.src[from + k] !== bytes[k]) return false;
    return true;
  }

  /**
   * For a document that is an object: the members before `stop` (parsed, as an object), once they
   * have all arrived. undefined: not yet known (input ends first); null: `stop` never comes first
   * (not an object, or the document ends without it).
   */
  head(stop: Uint8Array): Record<string, unknown> | null | undefined {
    const s = this.src;
    try {
      let i = this.ws(0);
      if (i >= s.length) return undefined;
      if (s[i] !== LBRACE) return null;
      const parts: string[] = [];
      i = this.ws(i + 1);
      for (;;) {
        if (i >= s.length) return undefined;
        if (s[i] === RBRACE) return null;
        this.expect(i, QUOTE, 'a member name');
        const keyStart = i;
        const keyEnd = this.string(i);
        if (this.same(keyStart + 1, keyEnd - 1, stop)) {
          const parsed: unknown = JSON.parse(`{${parts.join(',')}}`);
          return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : null;
        }
        i = this.ws(keyEnd);
        this.expect(i, COLON, '":"');
        const valueStart = this.ws(i + 1);
        const valueEnd = this.skip(valueStart);
        // Only complete when what follows is known: a value at the very end may still be growing.
        i = this.ws(valueEnd);
        if (i >= s.length) return undefined;
        parts.push(`${s.toString('utf8', keyStart, keyEnd)}:${s.toString('utf8', valueStart, valueEnd)}`);
        if (s[i] === COMMA) i = this.ws(i + 1);
      }
    } catch (err) {
      if (err instanceof JsonSelectError) return err.message.startsWith('unexpected end of input') || err.message.startsWith('unterminated') ? undefined : null;
      if (err instanceof SyntaxError) return null;
      throw err;
    }
  }

  private isSplit(keyStart: number, keyEnd: number): boolean {
    const name = this.split?.name;
    if (!name || this.depth !== 1 || keyEnd - keyStart !== name.length) return false;
    for (let k = 0; k < name.length; k++) if (this.src[keyStart + k] !== name[k]) return false;
    return true;
  }

  private object(i: number, sel: Compiled): number {
    const s = this.src;
    const w = sel.where;
    let matched = w === undefined;
    this.depth++;
    this.byte(LBRACE);
    let first = true;
    i = this.ws(i + 1);
    if (s[i] === RBRACE) {
      this.byte(RBRACE);
      this.depth--;
      this.dropped = !matched;
      return i + 1;
    }
    for (;;) {
      this.expect(i, QUOTE, 'a member name');
      const keyStart = i;
      const keyEnd = this.string(i);
      const next = this.lookup(keyStart + 1, keyEnd - 1, sel);
      i = this.ws(keyEnd);
      this.expect(i, COLON, '":"');
      i = this.ws(i + 1);
      const valueStart = i;
      const isWhere = w !== undefined && this.same(keyStart + 1, keyEnd - 1, w.name);
      if (next === undefined) {
        i = this.skip(i);
      } else {
        if (!first) this.byte(COMMA);
        first = false;
        this.emit(keyStart, keyEnd);
        this.byte(COLON);
        const split = this.split;
        if (split && next !== true && s[i] === LBRACKET && this.isSplit(keyStart + 1, keyEnd - 1)) {
          split.found = true;
          split.start = this.pos;
          i = this.array(i, next, split.elements);
          split.end = this.pos;
        } else {
          i = this.value(i, next);
        }
      }
      if (isWhere && w) matched = w.values.some((v) => this.same(valueStart, i, v));
      i = this.ws(i);
      if (s[i] === COMMA) {
        i = this.ws(i + 1);
        continue;
      }
      this.expect(i, RBRACE, '"," or "}"');
      this.byte(RBRACE);
      this.depth--;
      this.dropped = !matched;
      return i + 1;
    }
  }

  private array(i: number, sel: Compiled, elements?: number[]): number {
    const s = this.src;
    this.depth++;
    this.byte(LBRACKET);
    i = this.ws(i + 1);
    if (s[i] === RBRACKET) {
      this.byte(RBRACKET);
      this.depth--;
      return i + 1;
    }
    for (let emitted = false; ; ) {
      const before = this.pos;
      if (emitted) this.byte(COMMA);
      const start = this.pos;
      this.dropped = false;
      i = this.value(i, sel);
      if (this.dropped) {
        // where() refused it: take back what was written, its comma included.
        this.pos = before;
        this.dropped = false;
      } else {
        emitted = true;
        elements?.push(start, this.pos);
      }
      i = this.ws(i);
      if (s[i] === COMMA) {
        i = this.ws(i + 1);
        continue;
      }
      this.expect(i, RBRACKET, '"," or "]"');
      this.byte(RBRACKET);
      this.depth--;
      return i + 1;
    }
  }
}

function asBuffer(src: Uint8Array): Buffer {
  return Buffer.isBuffer(src) ? src : Buffer.from(src.buffer, src.byteOffset, src.byteLength);
}

/**
 * The selected part of the JSON document in `src`, as JSON text bytes. Throws JsonSelectError on
 * malformed input. With `scratch`, the output is written into (and may replace) scratch.buf: it is
 * valid until the next call with the same scratch.
 */
export function selectJson(src: Uint8Array, sel: Selection, scratch?: Scratch): Buffer {
  return new Selector(asBuffer(src), scratch, undefined).run(sel);
}

/** A selection whose large array member is kept aside, its elements parsed one at a time on demand. */
export interface SplitSelection {
  /** The selection without that member's elements (the member is `[]`). */
  rest: unknown;
  /** Number of elements; undefined when the document has no such array member. */
  length: number | undefined;
  /** Element i, parsed now (valid until the output buffer is reused). */
  element(i: number): unknown;
}

/** Where selectSplitRaw put things in `out` (plain numbers: it crosses threads as is). */
export interface SplitRanges {
  /** Bytes of `out` used. */
  length: number;
  /** The array member was found: its value spans [start, end) and its elements `elements` ([s, e) pairs). */
  found: boolean;
  start: number;
  end: number;
  elements: number[];
}

/**
 * The selection of `src` written into `out`, which must be at least as large as `src` (a selection
 * is never longer than its input), with the output ranges of the `member` array and its elements.
 */
export function selectSplitRaw(src: Uint8Array, sel: Selection, member: string, out: Buffer): SplitRanges {
  if (out.length < src.length) throw new RangeError(`output buffer of ${out.length} bytes for ${src.length} bytes of input`);
  const split: Split = { name: encodeName(member), start: 0, end: 0, elements: [], found: false };
  const scratch: Scratch = { buf: out };
  const result = new Selector(asBuffer(src), scratch, split).run(sel);
  if (scratch.buf !== out) throw new Error('selection outgrew its output buffer');
  return { length: result.length, found: split.found, start: split.start, end: split.end, elements: split.elements };
}

/** The parsed view of selectSplitRaw's output. */
export function splitSelection(out: Buffer, r: SplitRanges): SplitSelection {
  const e = r.elements;
  if (!r.found) return { rest: JSON.parse(out.toString('utf8', 0, r.length)), length: undefined, element: () => undefined };
  return {
    rest: JSON.parse(`${out.toString('utf8', 0, r.start)}[]${out.toString('utf8', r.end, r.length)}`),
    length: e.length / 2,
    element: (i) => JSON.parse(out.toString('utf8', e[2 * i], e[2 * i + 1])),
  };
}

/**
 * For a document that is an object with a large array member (a list and its `items`): the selection
 * of everything but that array, parsed, and the array's elements parsed one by one when asked for.
 * Every string handed to JSON.parse stays small (none lands in the engine's large-object space), and
 * each element becomes garbage as soon as its consumer is done with it, instead of a whole page of
 * them outliving several collections.
 */
export function selectSplit(src: Uint8Array, sel: Selection, member: string, scratch?: Scratch): SplitSelection {
  const split: Split = { name: encodeName(member), start: 0, end: 0, elements: [], found: false };
  const out = new Selector(asBuffer(src), scratch, split).run(sel);
  return splitSelection(out, { length: out.length, found: split.found, start: split.start, end: split.end, elements: split.elements });
}

/**
 * The members of a document (an object) that come before member `stop`, from its first `length`
 * bytes: undefined while they have not all arrived, null when `stop` does not come first. Lists
 * from the apiserver put `metadata` (and its continue token) before `items`, so a page's token is
 * known from its first bytes.
 */
export function readHead(src: Uint8Array, length: number, stop: string): Record<string, unknown> | null | undefined {
  return new Selector(asBuffer(src).subarray(0, length), undefined, undefined).head(encodeName(stop));
}
