/**
 * The contracts' hygiene, as CI checks it: formatted with clang-format (proto/.clang-format),
 * `buf lint` clean (buf.yaml: the exceptions are written there), and no wire- or
 * JSON-breaking change against the previous commit (`buf breaking`). Each check is shown to
 * fail on a planted fault, in a copy of proto/.
 */
import { it } from "mocha";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BUF, bufBreaking, previousCommit } from "./breaking";
import { protoFiles } from "./load";

const ROOT = path.resolve(__dirname, "..");
const CLANG_FORMAT = path.join(ROOT, "node_modules/.bin/clang-format");
const ours = () =>
  protoFiles()
    .filter((f) => f.startsWith("meridian/"))
    .map((f) => path.join("proto", f));

function clangCheck(files: string[], cwd = ROOT) {
  const r = spawnSync(CLANG_FORMAT, ["--style=file", "--dry-run", "--Werror", ...files], { cwd, encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

/** A copy of the repository's contracts and buf.yaml in a temp dir, for the planted faults. */
function copyModule(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-proto-"));
  fs.cpSync(path.join(ROOT, "buf.yaml"), path.join(dir, "buf.yaml"));
  fs.cpSync(path.join(ROOT, "proto"), path.join(dir, "proto"), {
    recursive: true,
    filter: (src) => !src.includes(`${path.sep}gen`) && !src.endsWith(".ts"),
  });
  return dir;
}
const USER_PROTO = "proto/meridian/user/v1/user.proto";
function edit(dir: string, file: string, from: string | RegExp, to: string) {
  const p = path.join(dir, file);
  const before = fs.readFileSync(p, "utf8");
  const after = before.replace(from, to);
  assert.notEqual(after, before, `the planted fault ${String(from)} applies`);
  fs.writeFileSync(p, after);
}

it("every contract is clang-formatted (npm run proto:format fixes it)", () => {
  const files = ours();
  assert.ok(files.length >= 10, `contracts found: ${files.length}`);
  const { ok, output } = clangCheck(files);
  assert.ok(ok, output);
});

it("the format check fails on a misformatted contract", () => {
  const dir = copyModule();
  try {
    fs.cpSync(path.join(ROOT, "proto/.clang-format"), path.join(dir, "proto/.clang-format"));
    edit(dir, USER_PROTO, "  string email = 2;", "  string   email=2;");
    assert.equal(clangCheck([USER_PROTO], dir).ok, false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it("buf lint is clean (exceptions are in buf.yaml, each with its reason)", () => {
  const r = spawnSync(BUF, ["lint", "--error-format", "text"], { cwd: ROOT, encoding: "utf8" });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});

it("buf lint fails on a planted violation (an rpc request not named <Rpc>Request)", () => {
  const dir = copyModule();
  try {
    edit(dir, USER_PROTO, /\bLoginRequest\b/g, "Credentials");
    const r = spawnSync(BUF, ["lint", "--error-format", "text"], { cwd: dir, encoding: "utf8" });
    assert.notEqual(r.status, 0);
    assert.match(r.stdout, /RPC_REQUEST_STANDARD_NAME|should be named "LoginRequest"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

it("no breaking change against the previous commit (buf breaking, WIRE_JSON)", () => {
  const sha = previousCommit();
  // Only the repository's first commit with a buf.yaml has nothing to compare with.
  if (sha) {
    const { ok, output } = bufBreaking(".", `.git#ref=${sha}`);
    assert.ok(ok, output);
  } else {
    const first = spawnSync("git", ["log", "--format=%H", "--", "buf.yaml"], { cwd: ROOT, encoding: "utf8" }).stdout.trim().split("\n");
    assert.equal(first.length, 1, "a previous commit with buf.yaml exists, yet none was found");
  }
});

it("buf breaking fails on a renumbered, a retyped and a removed field, and accepts a new optional field", () => {
  const old = copyModule();
  const dirs = [old];
  const variant = (from: string | RegExp, to: string) => {
    const d = copyModule();
    dirs.push(d);
    edit(d, USER_PROTO, from, to);
    return bufBreaking(".", old, d);
  };
  try {
    const renumbered = variant(
      '  string email = 2;\n  string name = 3;\n  // "customer"',
      '  string email = 12;\n  string name = 3;\n  // "customer"',
    );
    assert.equal(renumbered.ok, false);
    const retyped = variant("  int32 page_size = 4;\n}\n\nmessage Session", "  string page_size = 4;\n}\n\nmessage Session");
    assert.equal(retyped.ok, false);
    const removed = variant("  string refresh_token = 3;\n}\n\nmessage Tokens", "}\n\nmessage Tokens");
    assert.equal(removed.ok, false);
    const added = variant(
      "  string refresh_token = 3;\n}\n\nmessage Tokens",
      "  string refresh_token = 3;\n  optional string device = 4;\n}\n\nmessage Tokens",
    );
    assert.ok(added.ok, added.output);
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
});
