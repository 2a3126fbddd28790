/**
 * Self-test of listDocsOperations: a bare node:http server serves a generated OpenAPI
 * document, the docs page and Swagger UI's files from disk; headless Chromium must see
 * the operations without a single request leaving the machine.
 */
import { after, before, it } from "mocha";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

import { DOCS_CONTENT_SECURITY_POLICY, docsHtml, docsInitJs, swaggerUiDistPath } from "../../lib/docs-page";
import { buildOpenApiDocument } from "../../lib/openapi";
import { listDocsOperations } from "./chromium";

const spec = buildOpenApiDocument({
  info: { title: "Meridian API", version: "0.0.0-test" },
  routes: [
    {
      path: "/api",
      aliases: {
        "POST /auth/register": "user.register",
        "GET /users/me": "user.me",
        "PATCH /users/me/addresses/:id": "user.updateAddress",
        "DELETE /users/me/addresses/:id": "user.deleteAddress",
        "GET /products": "product.list", // not registered: still documented
      },
    },
  ],
  actions: {
    "user.register": { auth: "none", params: { email: "email", password: "string|min:8", name: "string" }, openapi: { status: 201 } },
    "user.me": { auth: "user" },
    "user.updateAddress": { auth: "user", params: { id: "string", city: "string|optional" } },
    "user.deleteAddress": { auth: "user", params: { id: "string" }, openapi: { status: 204 } },
  },
});

const CONTENT_TYPES: Record<string, string> = {
  ".js": "application/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".map": "application/json",
};

const page = (cdn: boolean): string => {
  const html = docsHtml({ specUrl: "/api/openapi.json", assetBase: "/docs/assets" });
  // The "CDN" variant proves that an external request is caught, so "none" means something.
  return cdn
    ? html.replace("</head>", '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist/swagger-ui.css">\n</head>')
    : html;
};

async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  const send = (status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { "Content-Type": type, ...headers });
    res.end(body);
  };
  if (url.pathname === "/api/openapi.json") return send(200, "application/json", JSON.stringify(spec));
  if (url.pathname === "/docs") {
    return send(200, "text/html; charset=utf-8", page(false), { "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY });
  }
  if (url.pathname === "/docs-with-cdn") return send(200, "text/html; charset=utf-8", page(true));
  if (url.pathname === "/docs/assets/init.js") return send(200, CONTENT_TYPES[".js"] ?? "", docsInitJs);
  const file = url.pathname.startsWith("/docs/assets/") ? url.pathname.slice("/docs/assets/".length) : "";
  // Plain file names only: nothing outside swagger-ui-dist can be asked for.
  const type = CONTENT_TYPES[path.extname(file)];
  if (/^[\w.-]+$/.test(file) && type) {
    try {
      return send(200, type, await readFile(path.join(swaggerUiDistPath, file)));
    } catch {
      // fall through to 404
    }
  }
  send(404, "text/plain", "not found");
}

let server: http.Server;
let base = "";

before(async () => {
  server = http.createServer((req, res) => {
    handle(req, res).catch(() => send500(res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

function send500(res: http.ServerResponse): void {
  if (!res.headersSent) res.writeHead(500);
  res.end();
}

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

it("Swagger UI renders every operation from local files only, under a strict CSP", async () => {
  const report = await listDocsOperations(`${base}/docs`);
  assert.equal(report.title, "Meridian API");
  assert.deepEqual([...report.operations].sort(), [
    "DELETE /api/users/me/addresses/{id}",
    "GET /api/products",
    "GET /api/users/me",
    "PATCH /api/users/me/addresses/{id}",
    "POST /api/auth/register",
  ]);
  assert.deepEqual(report.failedRequests, []);
  assert.deepEqual(report.consoleErrors, []);
});

it("a request to an external host is blocked and reported", async () => {
  const report = await listDocsOperations(`${base}/docs-with-cdn`);
  assert.equal(report.operations.length, 5);
  assert.ok(
    report.failedRequests.some((r) => r.includes("https://cdn.jsdelivr.net/") && r.includes("blocked")),
    `expected the CDN request to be reported, got ${JSON.stringify(report.failedRequests)}`,
  );
});
