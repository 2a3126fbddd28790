/**
 * Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) for checking
 * the Swagger UI page (what it renders, what it logs, whether it reaches outside) and the
 * docs' Mermaid diagrams.
 */
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type Page, type Route } from "playwright-core";

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

/** What a page logged and fetched that it should not have. */
interface PageTrouble {
  consoleErrors: string[];
  failedRequests: string[];
}

/**
 * Runs `body` on a page of a fresh headless Chromium (a temporary profile, removed after): any
 * request to a non-loopback host is blocked (and reported), console errors, uncaught errors,
 * failed requests and responses >= 400 are collected in `trouble`.
 */
async function withPage<T>(timeoutMs: number, body: (page: Page, trouble: PageTrouble) => Promise<T>): Promise<T> {
  const trouble: PageTrouble = { consoleErrors: [], failedRequests: [] };
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
          trouble.failedRequests.push(`${request.method()} ${request.url()} (blocked: external host)`);
          await route.abort("blockedbyclient");
        } else {
          await route.continue();
        }
      });
      const page = context.pages()[0] ?? (await context.newPage());
      page.on("console", (message) => {
        if (message.type() === "error") trouble.consoleErrors.push(message.text());
      });
      page.on("pageerror", (error) => trouble.consoleErrors.push(`Uncaught: ${error.message}`));
      page.on("requestfailed", (request) => {
        if (blocked.has(request.url())) return; // already recorded as blocked
        trouble.failedRequests.push(`${request.method()} ${request.url()} (${request.failure()?.errorText ?? "failed"})`);
      });
      page.on("response", (response) => {
        if (response.status() >= 400)
          trouble.failedRequests.push(`${response.request().method()} ${response.url()} (HTTP ${response.status()})`);
      });
      return await body(page, trouble);
    } finally {
      await context.close();
    }
  } finally {
    await rm(userDataDir, { recursive: true, force: true });
  }
}

/**
 * Open the docs page, wait until Swagger UI has rendered its operation blocks, and report
 * them. Always closes the browser and removes its temporary profile.
 */
export async function listDocsOperations(docsUrl: string, options: ListDocsOptions = {}): Promise<DocsPageReport> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return withPage(timeoutMs, async (page, { consoleErrors, failedRequests }) => {
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
  });
}

/** One Mermaid diagram as rendered: its SVG's size and the node labels drawn, or Mermaid's error. */
export interface RenderedDiagram {
  svgBytes: number;
  labels: string[];
  error?: string;
}

/**
 * Renders each Mermaid source with the `mermaid` package from node_modules (its browser build,
 * loaded from the file: no CDN) in headless Chromium, one after the other on one page.
 */
export async function renderMermaid(sources: string[], timeoutMs = 60_000): Promise<{ diagrams: RenderedDiagram[] } & PageTrouble> {
  const bundle = require.resolve("mermaid/dist/mermaid.min.js");
  return withPage(timeoutMs, async (page, trouble) => {
    await page.setContent("<!doctype html><html><body></body></html>");
    await page.addScriptTag({ path: bundle });
    const rendered = await page.evaluate(async (all) => {
      const m = (globalThis as typeof globalThis & { mermaid: MermaidApi }).mermaid;
      m.initialize({ startOnLoad: false, securityLevel: "strict" });
      const out: { svg: string; error?: string }[] = [];
      for (const [i, source] of all.entries()) {
        try {
          out.push({ svg: (await m.render(`diagram-${i}`, source)).svg });
        } catch (err) {
          out.push({ svg: "", error: err instanceof Error ? err.message : String(err) });
        }
      }
      return out;
    }, sources);
    const diagrams = rendered.map(({ svg, error }): RenderedDiagram => {
      // A label is the text inside a node's or an edge's label element (HTML labels: <span>…</span>).
      const labels = [...svg.matchAll(/class="(?:nodeLabel|edgeLabel)"[^>]*>([\s\S]*?)<\/span>/g)]
        .map((l) =>
          l[1]
            .replace(/<br\s*\/?>/g, " ")
            .replace(/<[^>]+>/g, "")
            .trim(),
        )
        .filter(Boolean);
      return { svgBytes: svg.length, labels, ...(error ? { error } : {}) };
    });
    return { diagrams, ...trouble };
  });
}

/** The part of Mermaid's browser API used here. */
interface MermaidApi {
  initialize(config: { startOnLoad: boolean; securityLevel: string }): void;
  render(id: string, source: string): Promise<{ svg: string }>;
}

/**
 * Opens `url`, presses the button labelled `button` as a person would, and waits until the
 * page shows `until` (docs/tutorial.md's "open it in your browser and press …"). Resolves with
 * the page's text then; rejects, with what the page logged, when the text does not appear.
 */
export async function pressButton(url: string, button: string, until: string, timeoutMs = 30_000): Promise<string> {
  return withPage(timeoutMs, async (page, trouble) => {
    await page.goto(url, { waitUntil: "load", timeout: timeoutMs });
    await page.getByRole("button", { name: button }).click({ timeout: timeoutMs });
    try {
      await page.getByText(until).first().waitFor({ state: "visible", timeout: timeoutMs });
    } catch (error) {
      const detail = [...trouble.consoleErrors, ...trouble.failedRequests].join("; ") || "no console errors or failed requests";
      throw new Error(`"${until}" did not appear at ${url} after pressing "${button}": ${detail}`, { cause: error });
    }
    return (await page.locator("body").innerText()).trim();
  });
}
