/**
 * Key material and secrets for the platforms. Keys are parsed once, at configuration
 * time, into node:crypto KeyObjects (a bad key is a start-up error, not a failed payment
 * hours later), and secrets are wrapped so that logging a config object prints no secret.
 */
import { createPrivateKey, createPublicKey, createHash, type KeyObject } from "node:crypto";
import { inspect } from "node:util";

/** A secret value that prints as "[secret]" through toString, JSON and util.inspect. */
export class Secret<T = string> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
  }
  reveal(): T {
    return this.#value;
  }
  toString(): string {
    return "[secret]";
  }
  toJSON(): string {
    return "[secret]";
  }
  [inspect.custom](): string {
    return "[secret]";
  }
}

/**
 * Environment variables often carry PEM with literal "\n" escapes, or (as the Alipay key
 * tool hands them out) bare base64 without header lines: accept all three shapes.
 */
function pemText(text: string): string {
  return text.includes("\\n") ? text.replace(/\\n/g, "\n") : text;
}

function isPem(text: string): boolean {
  return /-----BEGIN [A-Z0-9 ]+-----/.test(text);
}

/** An RSA private key from PEM (PKCS#1 or PKCS#8) or bare base64 DER. Throws a message without the key. */
export function loadPrivateKey(text: string): KeyObject {
  const t = pemText(text.trim());
  let key: KeyObject | undefined;
  if (isPem(t)) key = attempt(() => createPrivateKey(t));
  else {
    const der = Buffer.from(t.replace(/\s+/g, ""), "base64");
    key =
      attempt(() => createPrivateKey({ key: der, format: "der", type: "pkcs8" })) ??
      attempt(() => createPrivateKey({ key: der, format: "der", type: "pkcs1" }));
  }
  if (!key || key.asymmetricKeyType !== "rsa") throw new Error("not a valid RSA private key (PEM or base64 DER expected)");
  return key;
}

/** An RSA public key from PEM (SPKI, PKCS#1 or an X.509 certificate) or bare base64 DER. */
export function loadPublicKey(text: string): KeyObject {
  const t = pemText(text.trim());
  // A private key passed by mistake would "work" (Node derives the public half) but
  // means a private key sits where only a public one belongs: refuse it.
  let isPrivate = false;
  try {
    loadPrivateKey(t);
    isPrivate = true;
  } catch {
    // not a private key: good
  }
  let key: KeyObject | undefined;
  if (isPrivate) key = undefined;
  else if (isPem(t)) key = attempt(() => createPublicKey(t));
  else {
    const der = Buffer.from(t.replace(/\s+/g, ""), "base64");
    key =
      attempt(() => createPublicKey({ key: der, format: "der", type: "spki" })) ??
      attempt(() => createPublicKey({ key: der, format: "der", type: "pkcs1" }));
  }
  if (!key || key.type !== "public" || key.asymmetricKeyType !== "rsa")
    throw new Error("not a valid RSA public key (PEM, certificate or base64 DER expected)");
  return key;
}

function attempt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}

export function publicKeyPem(key: KeyObject): string {
  return key.export({ type: "spki", format: "pem" }).toString();
}

export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: "pkcs8", format: "pem" }).toString();
}

/** Per key object: exporting a key to hash it cost ~0.3 ms per signed or verified callback. */
const keyIds = new WeakMap<KeyObject, string>();

/** A short public id of a public key (first 16 bytes of SHA-256 over its SPKI DER), for key rotation. */
export function keyId(key: KeyObject): string {
  let id = keyIds.get(key);
  if (id === undefined) {
    const pub = key.type === "private" ? createPublicKey(key) : key;
    id = createHash("sha256")
      .update(pub.export({ type: "spki", format: "der" }))
      .digest("hex")
      .slice(0, 32);
    keyIds.set(key, id);
  }
  return id;
}
