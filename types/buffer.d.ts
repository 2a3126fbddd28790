/**
 * Two methods every Node Buffer has but @types/node does not declare: UTF-8 straight into or
 * out of a range, without `write`/`toString`'s argument handling. protobufjs's own Writer and
 * Reader use them too; lib/serializer/bytes.ts does.
 */
export {};

declare global {
  interface Buffer {
    /** Writes `s` as UTF-8 at `offset` (at most `length` bytes); returns the bytes written. */
    utf8Write(s: string, offset?: number, length?: number): number;
    /** The UTF-8 text of bytes [start, end). */
    utf8Slice(start?: number, end?: number): string;
  }
}
