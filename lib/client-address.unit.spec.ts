import assert from "node:assert/strict";
import { it } from "mocha";
import { clientAddress, limitKey } from "./client-address";

it("TRUST_PROXY=0: the socket's address, whatever X-Forwarded-For says", () => {
  assert.equal(clientAddress("10.0.0.9", "1.2.3.4", 0), "10.0.0.9");
  assert.equal(clientAddress("::ffff:10.0.0.9", undefined, 0), "10.0.0.9");
  assert.equal(clientAddress(undefined, undefined, 0), "unknown");
});

it("hops count from the right: a client's forged leftmost entries never win", () => {
  // One proxy (ingress-nginx appending): the client wrote "6.6.6.6", the proxy appended the real peer.
  assert.equal(clientAddress("10.0.0.2", "6.6.6.6, 203.0.113.7", 1), "203.0.113.7");
  assert.equal(clientAddress("10.0.0.2", "203.0.113.7", 1), "203.0.113.7");
  // Two proxies (a CDN, then the ingress): the entry two from the right.
  assert.equal(clientAddress("10.0.0.2", "6.6.6.6, 203.0.113.7, 198.51.100.1", 2), "203.0.113.7");
  // Several headers are one list.
  assert.equal(clientAddress("10.0.0.2", ["6.6.6.6", "203.0.113.7"], 1), "203.0.113.7");
  // Rotating the leftmost entries changes nothing.
  for (const forged of ["1.1.1.1", "2.2.2.2", "3.3.3.3, 4.4.4.4"])
    assert.equal(clientAddress("10.0.0.2", `${forged}, 203.0.113.7`, 1), "203.0.113.7");
});

it("fewer entries than hops: the leftmost present; no header: the socket", () => {
  assert.equal(clientAddress("10.0.0.2", "203.0.113.7", 3), "203.0.113.7");
  assert.equal(clientAddress("10.0.0.2", undefined, 1), "10.0.0.2");
  assert.equal(clientAddress("10.0.0.2", " , ", 1), "10.0.0.2");
});

it("addresses are normalized: ports, brackets, IPv4-mapped IPv6", () => {
  assert.equal(clientAddress("10.0.0.2", "203.0.113.7:5555", 1), "203.0.113.7");
  assert.equal(clientAddress("10.0.0.2", "[2001:db8::1]:443", 1), "2001:db8::1");
  assert.equal(clientAddress("10.0.0.2", "::ffff:203.0.113.7", 1), "203.0.113.7");
});

it("limit keys: IPv4 as is, IPv6 by its /64 (rotating inside one subscriber's /64 is one client)", () => {
  assert.equal(limitKey("203.0.113.7"), "203.0.113.7");
  assert.equal(limitKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
  assert.equal(limitKey("2001:0db8:0001:0002:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
  assert.equal(limitKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(limitKey("::1"), "0:0:0:0::/64");
  assert.notEqual(limitKey("2001:db8:1:3::1"), limitKey("2001:db8:1:2::1"), "another /64 is another client");
  assert.equal(limitKey("unknown"), "unknown");
});
