/**
 * The OpenAPI document's view of an action, from its contract: the success body's schema
 * (proto/json-schema.ts), the success status, the error statuses (the contract names codes
 * of the one error catalog, lib/error-catalog.ts, which gives their statuses), the summary
 * (the rpc's comment: its first line and the lines that continue it; the rest describes)
 * the tags, and the Idempotency-Key header of an rpc that replays one. What the contract does not say (a non-JSON body's media
 * type, a description) still comes from the action's `openapi` key.
 */
import { ERROR_STATUS, type ErrorCode } from "../../lib/error-catalog";
import type { ActionInfo } from "../../lib/openapi";
import { contracts } from "../../lib/serializer/contracts-runtime";
import { messageJsonSchema } from "../../proto/json-schema";

const isCode = (c: string): c is ErrorCode => Object.prototype.hasOwnProperty.call(ERROR_STATUS, c);

export function withContracts(actions: Record<string, ActionInfo>): Record<string, ActionInfo> {
  const out: Record<string, ActionInfo> = { ...actions };
  for (const [name, info] of Object.entries(actions)) {
    const c = contracts.actions.get(name);
    if (!c) continue;
    const meta = { ...info.openapi };
    // The comment's first line is the summary, with the lines that continue it (a line that
    // starts in lower case: clang-format wrapped it); the rest is the description.
    const lines = (c.summary ?? "")
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
    let n = 1;
    while (n < lines.length && /^[a-z(]/.test(lines[n])) n++;
    const summary = lines.slice(0, n).join(" ");
    if (summary) meta.summary = summary.replace(/\.$/, "");
    if (lines.length > n && !meta.description) meta.description = lines.slice(n).join(" ");
    if (c.tags.length) meta.tags = c.tags;
    if (c.successStatus) meta.status = c.successStatus;
    const codes = c.errors.map((e) => {
      if (!isCode(e)) throw new Error(`${name}: error ${e} is not in the error catalog`);
      return ERROR_STATUS[e];
    });
    if (codes.length) meta.errors = [...new Set([...(meta.errors ?? []), ...codes])];
    // A JSON body is the response message; a page (HTML, text) keeps its declared media type.
    if (c.response && !meta.contentType) meta.response = messageJsonSchema(c.response);
    if (c.idempotency === "key") meta.idempotencyKey = true;
    out[name] = { ...info, auth: c.auth ?? info.auth, openapi: meta };
  }
  return out;
}
