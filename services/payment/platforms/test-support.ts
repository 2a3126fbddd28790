/**
 * Shared by this directory's tests: RSA keys generated per run (no real merchant key
 * exists here, and none may be checked in), and a local HTTP server that stands in for a
 * platform's gateway — no platform can be reached from here, so the servers answer with
 * the shapes the platforms document.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Aes, Formatter, Rsa } from "wechatpay-axios-plugin";

export interface RsaPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function rsaPair(): RsaPair {
  return generateKeyPairSync("rsa", { modulusLength: 2048 });
}

export interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface Reply {
  status?: number;
  headers?: Record<string, string>;
  body: string;
}

/** A local server that records every request and answers with `handler`. */
export async function fakeGateway(
  handler: (req: Received) => Reply | Promise<Reply>,
): Promise<{ url: string; received: Received[]; close: () => Promise<void> }> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r: Received = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) };
      received.push(r);
      Promise.resolve(handler(r)).then(
        (reply) => {
          res.writeHead(reply.status ?? 200, { "content-type": "application/json", ...reply.headers });
          res.end(reply.body);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * WeChat Pay's side of APIv3, as the tests play the platform: done by an independent
 * implementation, wechatpay-axios-plugin (the community SDK), not by our module's helpers nor
 * by node:crypto written again here, so that one misreading of the docs shared by the module
 * and its tests cannot make a forged callback look genuine (as the Alipay tests use the
 * official alipay-sdk).
 */
export const wechatPlatform = {
  /** A notification's `resource`: AEAD_AES_256_GCM under the APIv3 key, nonce and associated data as UTF-8. */
  resource(plaintext: string, apiV3Key: string | Buffer, opts: { nonce?: string; associatedData?: string } = {}) {
    const nonce = opts.nonce ?? randomBytes(6).toString("hex");
    const associatedData = opts.associatedData ?? "transaction";
    const key = typeof apiV3Key === "string" ? Buffer.from(apiV3Key, "utf8") : apiV3Key;
    return {
      original_type: "transaction",
      algorithm: "AEAD_AES_256_GCM",
      ciphertext: Aes.AesGcm.encrypt(plaintext, key, nonce, associatedData),
      associated_data: associatedData,
      nonce,
    };
  },
  /** The signature of a callback or an answer: SHA256withRSA over `timestamp\nnonce\nbody\n`. */
  sign(timestamp: string, nonce: string, body: string, privateKey: KeyObject): string {
    return Rsa.sign(Formatter.response(timestamp, nonce, body), privateKey);
  },
  /** A merchant request's signature, checked as the gateway does: over `method\nurl\ntimestamp\nnonce\nbody\n`. */
  verifyRequest(
    r: { method: string; url: string; body: string },
    timestamp: string,
    nonce: string,
    signature: string,
    publicKey: KeyObject,
  ): boolean {
    return Rsa.verify(Formatter.request(r.method, r.url, timestamp, nonce, r.body), signature, publicKey);
  },
};

/**
 * The headers WeChat Pay signs an answer with (APIv3): a timestamp (epoch seconds), a nonce,
 * the platform certificate's serial, and SHA256withRSA over `timestamp\nnonce\nbody\n`
 * with the platform's private key, as the stand-ins of WeChat's gateway answer.
 */
export function wechatAnswerHeaders(
  body: string,
  platformKey: KeyObject,
  serial: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): Record<string, string> {
  const timestamp = String(nowSeconds);
  const nonce = randomBytes(16).toString("hex");
  return {
    "wechatpay-timestamp": timestamp,
    "wechatpay-nonce": nonce,
    "wechatpay-serial": serial,
    "wechatpay-signature": wechatPlatform.sign(timestamp, nonce, body, platformKey),
  };
}
