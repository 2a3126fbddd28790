/**
 * The protobuf wire format, written and read directly: a Writer that appends to one reusable
 * buffer and a Reader over received bytes. The compiled contract codecs (contract-codec.ts) and
 * the packet envelopes (protobuf-serializer.ts, events/wire.ts) use them so that checking a
 * value against its contract, writing it, and wrapping it in its envelope is one pass into one
 * buffer, and decoding builds the plain values directly.
 *
 * Why not protobufjs's Writer/Reader: its Writer queues one operation object per field and
 * copies at finish, and each nested message forks a new queue; measured on our packets, the
 * envelope alone cost a third of Moleculer's whole JSON round trip (bench/RESULTS.md). The
 * bytes are standard protobuf, decodable by protobufjs or any other implementation (the wire
 * tests decode captured packets with protobufjs from proto/ alone).
 */

/** Wire types. */
export const VARINT = 0;
export const I64 = 1;
export const LEN = 2;
export const I32 = 5;

const TWO_32 = 2 ** 32;

/** A safe integer's 64-bit two's complement, as its unsigned low and high words. */
function split64(v: number): [number, number] {
  const a = v < 0 ? -v : v;
  let lo = (a % TWO_32) >>> 0;
  let hi = Math.floor(a / TWO_32) >>> 0;
  if (v < 0) {
    lo = ~lo >>> 0;
    hi = ~hi >>> 0;
    if (++lo > 0xffffffff) {
      lo = 0;
      hi = (hi + 1) >>> 0;
    }
  }
  return [lo, hi];
}

/** A 64-bit two's complement (low and high words) as a number: exact within ±2^53. */
function join64(lo: number, hi: number, signed: boolean): number {
  if (signed && hi & 0x80000000) {
    // negative: -(~x + 1)
    return -((~hi >>> 0) * TWO_32 + (~lo >>> 0) + 1);
  }
  return hi * TWO_32 + lo;
}

/**
 * Appends protobuf fields to one growing buffer. `finish()` copies the bytes out and resets it,
 * so one Writer serves every packet of its owner (serialization is synchronous). A nested
 * message reserves one length byte (`fork`) and widens it at `join` when it grew past 127 bytes.
 */
export class Writer {
  buf: Buffer;
  pos = 0;
  /** A buffer grown past this size is dropped after the packet, so one huge packet does not pin memory. */
  private static readonly KEEP = 1 << 20;

  constructor(size = 16 * 1024) {
    this.buf = Buffer.allocUnsafeSlow(size);
  }

  reset(): void {
    this.pos = 0;
  }

  private grow(need: number): void {
    let size = this.buf.length * 2;
    while (size < this.pos + need) size *= 2;
    const next = Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.grow(n);
  }

  /** The bytes written since the last reset, as a Buffer of their own; the Writer is reset. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    if (this.buf.length > Writer.KEEP) this.buf = Buffer.allocUnsafeSlow(16 * 1024);
    return out;
  }

  tag(field: number, wireType: number): void {
    this.uint32((field << 3) | wireType);
  }

  uint32(v: number): void {
    this.ensure(5);
    const b = this.buf;
    let p = this.pos;
    v >>>= 0;
    while (v > 127) {
      b[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }

  /** int32: a negative value takes ten bytes (sign-extended), as the protobuf spec says. */
  int32(v: number): void {
    if (v >= 0) this.uint32(v);
    else this.int64(v);
  }

  sint32(v: number): void {
    this.uint32(((v << 1) ^ (v >> 31)) >>> 0);
  }

  /** A safe integer as a 64-bit varint (two's complement for negatives). */
  int64(v: number): void {
    const [lo, hi] = split64(v);
    this.varint64(lo, hi);
  }

  sint64(v: number): void {
    // zigzag in 64 bits: (v << 1) ^ (v >> 63)
    const [lo, hi] = split64(v);
    const mask = hi >> 31;
    this.varint64(((lo << 1) ^ mask) >>> 0, (((hi << 1) | (lo >>> 31)) ^ mask) >>> 0);
  }

  private varint64(lo: number, hi: number): void {
    this.ensure(10);
    const b = this.buf;
    let p = this.pos;
    while (hi) {
      b[p++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    while (lo > 127) {
      b[p++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    b[p++] = lo;
    this.pos = p;
  }

  bool(v: boolean): void {
    this.ensure(1);
    this.buf[this.pos++] = v ? 1 : 0;
  }

  double(v: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  fixed32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }

  sfixed32(v: number): void {
    this.ensure(4);
    this.buf.writeInt32LE(v | 0, this.pos);
    this.pos += 4;
  }

  fixed64(v: number): void {
    this.ensure(8);
    const [lo, hi] = split64(v);
    this.buf.writeUInt32LE(lo, this.pos);
    this.buf.writeUInt32LE(hi, this.pos + 4);
    this.pos += 8;
  }

  /** A length-delimited UTF-8 string. Short ASCII is copied in a loop (cheaper than a native call). */
  string(s: string): void {
    const n = s.length;
    if (n < 43) {
      // 3 bytes per UTF-16 unit at most: the length fits one byte.
      this.ensure(1 + n * 3);
      const b = this.buf;
      const start = this.pos + 1;
      let p = start;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 128) {
          p = start + b.utf8Write(s, start);
          break;
        }
        b[p++] = c;
      }
      b[this.pos] = p - start;
      this.pos = p;
      return;
    }
    const len = Buffer.byteLength(s, "utf8");
    this.uint32(len);
    this.ensure(len);
    this.buf.utf8Write(s, this.pos, len);
    this.pos += len;
  }

  bytes(v: Uint8Array): void {
    this.uint32(v.length);
    this.ensure(v.length);
    this.buf.set(v, this.pos);
    this.pos += v.length;
  }

  /** Starts a length-delimited body: returns where its length goes (one byte reserved). */
  fork(): number {
    this.ensure(1);
    return this.pos++;
  }

  /** Ends the body started at `at`: writes its length, moving the body if it needs more than one byte. */
  join(at: number): void {
    const len = this.pos - at - 1;
    if (len < 128) {
      this.buf[at] = len;
      return;
    }
    let size = 1;
    for (let v = len >>> 7; v; v >>>= 7) size++;
    this.ensure(size - 1);
    this.buf.copyWithin(at + size, at + 1, this.pos);
    this.pos += size - 1;
    let p = at;
    let v = len;
    while (v > 127) {
      this.buf[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    this.buf[p] = v;
  }
}

/** Reads protobuf fields from bytes; throws on anything truncated or malformed. */
export class Reader {
  readonly buf: Buffer;
  pos: number;
  end: number;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.end = this.buf.length;
  }

  private overrun(): never {
    throw new RangeError(`truncated: read past the end at ${this.pos}`);
  }

  /** A varint's low 32 bits (unsigned); longer varints are consumed. */
  uint32(): number {
    const b = this.buf;
    let p = this.pos;
    let v = 0;
    for (let shift = 0; shift < 32; shift += 7) {
      if (p >= this.end) this.overrun();
      const c = b[p++];
      v |= (c & 127) << shift;
      if (c < 128) {
        this.pos = p;
        return v >>> 0;
      }
    }
    // the 5th byte carried bits 28–34; skip the rest of a 64-bit varint
    for (let i = 0; i < 5; i++) {
      if (p >= this.end) this.overrun();
      if (b[p++] < 128) {
        this.pos = p;
        return v >>> 0;
      }
    }
    throw new RangeError("varint longer than 10 bytes");
  }

  int32(): number {
    return this.uint32() | 0;
  }

  sint32(): number {
    const v = this.uint32();
    return (v >>> 1) ^ -(v & 1);
  }

  /** A 64-bit varint as a number (exact within ±2^53, like protobufjs's Long.toNumber). */
  private varint64(): [number, number] {
    const b = this.buf;
    let p = this.pos;
    let lo = 0;
    let hi = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++, shift += 7) {
      if (p >= this.end) this.overrun();
      const c = b[p++];
      if (shift < 28) lo |= (c & 127) << shift;
      else if (shift === 28) {
        lo |= (c & 15) << 28;
        hi |= (c & 127) >> 4;
      } else hi |= (c & 127) << (shift - 32);
      if (c < 128) {
        this.pos = p;
        return [lo >>> 0, hi >>> 0];
      }
    }
    throw new RangeError("varint longer than 10 bytes");
  }

  int64(): number {
    const [lo, hi] = this.varint64();
    return join64(lo, hi, true);
  }

  uint64(): number {
    const [lo, hi] = this.varint64();
    return join64(lo, hi, false);
  }

  sint64(): number {
    // un-zigzag in 64 bits: (u >>> 1) ^ -(u & 1)
    const [lo, hi] = this.varint64();
    const mask = -(lo & 1);
    return join64((((lo >>> 1) | (hi << 31)) ^ mask) >>> 0, ((hi >>> 1) ^ mask) >>> 0, true);
  }

  bool(): boolean {
    return this.uint32() !== 0;
  }

  double(): number {
    if (this.pos + 8 > this.end) this.overrun();
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  float(): number {
    if (this.pos + 4 > this.end) this.overrun();
    const v = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return v;
  }

  fixed32(): number {
    if (this.pos + 4 > this.end) this.overrun();
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  sfixed32(): number {
    if (this.pos + 4 > this.end) this.overrun();
    const v = this.buf.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  fixed64(): number {
    if (this.pos + 8 > this.end) this.overrun();
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return hi * TWO_32 + lo;
  }

  sfixed64(): number {
    if (this.pos + 8 > this.end) this.overrun();
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return join64(lo, hi, true);
  }

  /** The end of a length-delimited body that starts here (its length is consumed). */
  delimited(): number {
    const len = this.uint32();
    const end = this.pos + len;
    if (end > this.end) this.overrun();
    return end;
  }

  string(): string {
    const end = this.delimited();
    const start = this.pos;
    this.pos = end;
    return this.buf.utf8Slice(start, end);
  }

  /** The bytes of a length-delimited field, as a view (no copy). */
  bytes(): Buffer {
    const end = this.delimited();
    const start = this.pos;
    this.pos = end;
    return this.buf.subarray(start, end);
  }

  /** Skips a field of an unknown number. Groups (wire types 3/4) are refused, as proto3 has none. */
  skip(wireType: number): void {
    switch (wireType) {
      case VARINT:
        this.uint32();
        return;
      case I64:
        if ((this.pos += 8) > this.end) this.overrun();
        return;
      case LEN:
        this.pos = this.delimited();
        return;
      case I32:
        if ((this.pos += 4) > this.end) this.overrun();
        return;
      default:
        throw new RangeError(`invalid wire type ${wireType} at ${this.pos}`);
    }
  }
}
