/**
 * Parses proto/**\/*.proto with protobufjs (no protoc needed). Used by the generator, the
 * staleness check and the wire test; the running serializer loads the generated
 * proto/gen/descriptor.json instead, so no .proto is parsed at start.
 */
import fs from "node:fs";
import path from "node:path";
import protobuf from "protobufjs";

export const PROTO_DIR = __dirname;
/** descriptor.proto (for the custom options) ships with protobufjs. */
const PROTOBUFJS_DIR = path.dirname(require.resolve("protobufjs/package.json"));

/** Every .proto under proto/ (relative, sorted), skipping proto/gen. */
export function protoFiles(dir = PROTO_DIR): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== "gen" && e.name !== "node_modules") walk(p);
      } else if (e.name.endsWith(".proto")) out.push(path.relative(dir, p).split(path.sep).join("/"));
    }
  };
  walk(dir);
  return out.sort();
}

/** A resolved protobufjs Root of every .proto under `dir`; field names camelCased (postal_code → postalCode). */
export function loadProtoRoot(dir = PROTO_DIR): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith("google/protobuf/") ? path.join(PROTOBUFJS_DIR, target) : path.resolve(dir, target);
  // alternateCommentMode: `//` comments above an rpc become its summary.
  root.loadSync(protoFiles(dir), { keepCase: false, alternateCommentMode: true });
  root.resolveAll();
  return root;
}
