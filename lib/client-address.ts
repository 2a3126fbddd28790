import { isIPv6 } from "node:net";

/**
 * The client's address behind `hops` trusted proxies, as Express's numeric `trust proxy`:
 * each proxy appends the address it received from to X-Forwarded-For, so only the last
 * `hops` entries were written by proxies we run; everything left of them is whatever the
 * client sent. The address is therefore the entry `hops` from the right (counting the
 * socket's peer as the first hop), never the leftmost one, which a client can forge.
 * With fewer entries than hops, the leftmost present is the best we have.
 */
export function clientAddress(socketAddress: string | undefined, forwardedFor: string | string[] | undefined, hops: number): string {
  const socket = normalize(socketAddress ?? "") || "unknown";
  if (hops <= 0 || forwardedFor === undefined) return socket;
  // Several X-Forwarded-For headers are one list, in order (RFC 7230 §3.2.2).
  const header = Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor;
  const entries = header
    .split(",")
    .map((e) => normalize(e.trim()))
    .filter(Boolean);
  // [socket, last entry, …, first entry]: the socket's peer is hop 0.
  const chain = [socket, ...entries.reverse()];
  return chain[Math.min(hops, chain.length - 1)];
}

/** `::ffff:10.0.0.1` and `10.0.0.1` are one client; ports and brackets are dropped. */
function normalize(address: string): string {
  let a = address.replace(/^\[([^\]]+)\](?::\d+)?$/, "$1");
  if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a)) a = a.slice(0, a.lastIndexOf(":"));
  if (a.toLowerCase().startsWith("::ffff:") && a.includes(".")) a = a.slice(7);
  return a.length <= 64 ? a : a.slice(0, 64);
}

/**
 * The key a client address counts under in the per-address limits: an IPv4 address as is;
 * an IPv6 address by its /64, since one subscriber is usually given a whole /64 (and could
 * otherwise rotate through 2^64 addresses to escape every per-address limit). Anything
 * that is not an IP address (e.g. "unknown") is its own key.
 */
export function limitKey(address: string): string {
  if (isIPv6(address)) {
    const groups = expandIPv6(address);
    if (groups) return `${groups.slice(0, 4).join(":")}::/64`;
  }
  return address;
}

/** The eight 16-bit groups of an IPv6 address, lower-case hex without leading zeros; undefined if malformed. */
function expandIPv6(address: string): string[] | undefined {
  let a = address.toLowerCase().split("%")[0];
  // An embedded IPv4 tail (::ffff:1.2.3.4 was normalized before; others are rare): as two groups.
  const v4 = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(a);
  if (v4) a = a.slice(0, v4.index) + `${((+v4[1] << 8) | +v4[2]).toString(16)}:${((+v4[3] << 8) | +v4[4]).toString(16)}`;
  const [head, tail, extra] = a.split("::");
  if (extra !== undefined) return undefined;
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const missing = 8 - left.length - right.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined;
  const groups = [...left, ...Array<string>(tail === undefined ? 0 : missing).fill("0"), ...right];
  return groups.every((g) => /^[0-9a-f]{1,4}$/.test(g)) ? groups.map((g) => g.replace(/^0+(?=.)/, "")) : undefined;
}
