/**
 * What the gateway needs to serve the browsable API docs at `GET /docs`.
 *
 * Everything comes from our own server: Swagger UI's files from the locally installed
 * `swagger-ui-dist` (no CDN), and a small initializer script instead of an inline
 * <script>, so the page works under a strict `script-src 'self'` CSP.
 */
import path from "node:path";

/**
 * Folder of the installed `swagger-ui-dist` (swagger-ui-bundle.js, swagger-ui.css, ...).
 * Resolved through package.json rather than the package's main file: its `index.js`
 * would load the 1.5 MB browser bundle into Node just to answer `getAbsoluteFSPath()`.
 */
export const swaggerUiDistPath: string = path.dirname(require.resolve("swagger-ui-dist/package.json"));

/** File name of our initializer, served next to Swagger UI's files (not part of swagger-ui-dist). */
export const DOCS_INIT_SCRIPT_NAME = "init.js";

/**
 * Contents of the initializer (serve it as `application/javascript`). Constant on
 * purpose (cacheable, no templating into JS): the spec URL is read from the
 * `data-spec-url` attribute that `docsHtml` puts on the container element.
 *
 * `validatorUrl: null` matters: otherwise, whenever the spec URL is not on localhost
 * (i.e. in any real deployment), Swagger UI loads a badge image from validator.swagger.io
 * and sends it our spec's URL: an external request on every page view.
 */
export const docsInitJs = `"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
});
`;

/**
 * A Content-Security-Policy the docs page works under (checked by the browser test):
 * scripts and data only from our origin; Swagger UI needs inline styles and data: images.
 */
export const DOCS_CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

export interface DocsPageOptions {
  /** URL of the OpenAPI document, e.g. "/api/openapi.json". */
  specUrl: string;
  /** URL prefix where `swaggerUiDistPath` is served, e.g. "/docs/assets". */
  assetBase: string;
  /** Where `docsInitJs` is served; default `${assetBase}/init.js`. */
  initScriptUrl?: string;
  /** Page title; default "Meridian API". */
  title?: string;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** The HTML of `GET /docs`: loads Swagger UI's bundle, preset and CSS from `assetBase`. */
export function docsHtml(options: DocsPageOptions): string {
  const base = options.assetBase.replace(/\/+$/, "");
  const asset = (file: string): string => escapeHtml(`${base}/${file}`);
  const initUrl = escapeHtml(options.initScriptUrl ?? `${base}/${DOCS_INIT_SCRIPT_NAME}`);
  const title = escapeHtml(options.title ?? "Meridian API");
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<link rel="stylesheet" href="${asset("swagger-ui.css")}">
<link rel="icon" type="image/png" sizes="32x32" href="${asset("favicon-32x32.png")}">
<link rel="icon" type="image/png" sizes="16x16" href="${asset("favicon-16x16.png")}">
</head>
<body>
<div id="swagger-ui" data-spec-url="${escapeHtml(options.specUrl)}"></div>
<script src="${asset("swagger-ui-bundle.js")}" charset="utf-8"></script>
<script src="${asset("swagger-ui-standalone-preset.js")}" charset="utf-8"></script>
<script src="${initUrl}" charset="utf-8"></script>
</body>
</html>
`;
}
