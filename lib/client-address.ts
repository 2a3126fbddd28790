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
  const entries = header.split(",").map((e) => normalize(e.trim())).filter(Boolean);
  // [socket, last entry, …, first entry]: the socket's peer is hop 0.
  const chain = [socket, ...entries.reverse()];
  return chain[Math.min(hops, chain.length - 1)]!;
}

/** `::ffff:10.0.0.1` and `10.0.0.1` are one client; ports and brackets are dropped. */
function normalize(address: string): string {
  let a = address.replace(/^\[([^\]]+)\](?::\d+)?$/, "$1");
  if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a)) a = a.slice(0, a.lastIndexOf(":"));
  if (a.toLowerCase().startsWith("::ffff:") && a.includes(".")) a = a.slice(7);
  return a.length <= 64 ? a : a.slice(0, 64);
}
