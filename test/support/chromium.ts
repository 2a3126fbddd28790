/**
 * Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) for checking
 * the Swagger UI page: what it renders, what it logs, and whether it reaches outside.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type Route } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Quiet, sandbox-free (containers) and offline-minded: no background traffic of Chromium's own. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface DocsPageReport {
  /** document.title of the docs page. */
  title: string;
  /** Rendered operations, "METHOD /path" (e.g. "GET /api/users/me"), in page order. */
  operations: string[];
  /** console.error messages and uncaught page errors. */
  consoleErrors: string[];
  /**
   * Requests that did not succeed: anything to a non-loopback host (blocked, so no CDN can
   * be reached even by accident), local requests that failed, and responses >= 400.
   */
  failedRequests: string[];
}

export interface ListDocsOptions {
  /** How long to wait for Swagger UI to render operations; default 30 s. */
  timeoutMs?: number;
}

function isLoopbackHost(hostname: string): boolean {
  return (
    hostname === "localhost" || hostname.endsWith(".localhost") || hostname === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)
  );
}

/** Only http(s)/ws(s) reach the network; data:, blob: etc. are in-page. */
function isExternal(url: string): boolean {
  try {
    const parsed = new URL(url);
    if (!["http:", "https:", "ws:", "wss:"].includes(parsed.protocol)) return false;
    return !isLoopbackHost(parsed.hostname);
  } catch {
    return true; // unparseable: treat as foreign rather than let it through
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Open the docs page, wait until Swagger UI has rendered its operation blocks, and report
 * them. Always closes the browser and removes its temporary profile.
 */
export async function listDocsOperations(docsUrl: string, options: ListDocsOptions = {}): Promise<DocsPageReport> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const consoleErrors: string[] = [];
  const failedRequests: string[] = [];
  const blocked = new Set<string>();

  // A fresh profile each time: no cache or state leaks between runs.
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), "meridian-chromium-"));
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_ARGS],
      timeout: timeoutMs,
    });
    try {
      await context.route("**/*", async (route: Route) => {
        const request = route.request();
        if (isExternal(request.url())) {
          blocked.add(request.url());
          failedRequests.push(`${request.method()} ${request.url()} (blocked: external host)`);
          await route.abort("blockedbyclient");
        } else {
          await route.continue();
        }
      });

      const page = context.pages()[0] ?? (await context.newPage());
      page.on("console", (message) => {
        if (message.type() === "error") consoleErrors.push(message.text());
      });
      page.on("pageerror", (error) => consoleErrors.push(`Uncaught: ${error.message}`));
      page.on("requestfailed", (request) => {
        if (blocked.has(request.url())) return; // already recorded as blocked
        failedRequests.push(`${request.method()} ${request.url()} (${request.failure()?.errorText ?? "failed"})`);
      });
      page.on("response", (response) => {
        if (response.status() >= 400) failedRequests.push(`${response.request().method()} ${response.url()} (HTTP ${response.status()})`);
      });

      await page.goto(docsUrl, { waitUntil: "load", timeout: timeoutMs });
      try {
        await page.locator(".opblock").first().waitFor({ state: "attached", timeout: timeoutMs });
      } catch (error) {
        // Say why the page did not render, not just that it timed out.
        const detail = [...consoleErrors, ...failedRequests].join("; ") || "no console errors or failed requests";
        throw new Error(`Swagger UI rendered no operations at ${docsUrl} within ${timeoutMs} ms: ${detail}`, { cause: error });
      }

      // Tag sections render in one pass, but wait for the count to settle to be sure.
      const blocks = page.locator(".opblock");
      let count = await blocks.count();
      for (let settled = 0; settled < 2;) {
        await sleep(150);
        const next = await blocks.count();
        settled = next === count ? settled + 1 : 0;
        count = next;
      }

      const operations: string[] = [];
      for (const block of await blocks.all()) {
        const method = ((await block.locator(".opblock-summary-method").first().textContent()) ?? "").trim().toUpperCase();
        const pathElement = block.locator("[data-path]").first();
        // data-path holds the raw template; the visible text has zero-width spaces for wrapping.
        const rawPath =
          (await pathElement.count()) > 0
            ? await pathElement.getAttribute("data-path")
            : await block.locator(".opblock-summary-path, .opblock-summary-path__deprecated").first().textContent();
        operations.push(`${method} ${(rawPath ?? "").replace(/\u200b/g, "").trim()}`);
      }

      return { title: await page.title(), operations, consoleErrors, failedRequests };
    } finally {
      await context.close();
    }
  } finally {
    await rm(userDataDir, { recursive: true, force: true });
  }
}
