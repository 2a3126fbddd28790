/** The gRPC edge's pure parts: the caller's address from grpc-js's peer string. */
import assert from "node:assert/strict";
import { it } from "mocha";
import { Metadata } from "@grpc/grpc-js";
import { callerAddress, peerAddress } from "./edge";

it("peerAddress: grpc-js's peer strings (IPv4, IPv6 with or without brackets, with a scheme); anything else is unknown", () => {
  assert.equal(peerAddress("127.0.0.1:57298"), "127.0.0.1");
  assert.equal(peerAddress("::1:5678"), "::1");
  assert.equal(peerAddress("[::1]:5678"), "::1");
  assert.equal(peerAddress("::ffff:10.0.0.7:443"), "::ffff:10.0.0.7");
  assert.equal(peerAddress("ipv4:1.2.3.4:5"), "1.2.3.4");
  assert.equal(peerAddress("ipv6:[2001:db8::1]:80"), "2001:db8::1");
  assert.equal(peerAddress("unix:/tmp/socket"), undefined);
  assert.equal(peerAddress(""), undefined);
});

it("callerAddress: the peer, or x-forwarded-for's entry only as far as TRUST_PROXY allows", () => {
  const md = (xff?: string) => {
    const m = new Metadata();
    if (xff) m.set("x-forwarded-for", xff);
    return m;
  };
  assert.equal(
    callerAddress({ getPeer: () => "10.1.2.3:4000", metadata: md("6.6.6.6") }, 0),
    "10.1.2.3",
    "no proxy trusted: the header is the client's own words",
  );
  assert.equal(
    callerAddress({ getPeer: () => "10.1.2.3:4000", metadata: md("6.6.6.6, 203.0.113.9") }, 1),
    "203.0.113.9",
    "one proxy: the entry it appended",
  );
  assert.equal(callerAddress({ getPeer: () => "10.1.2.3:4000", metadata: md() }, 1), "10.1.2.3");
});
