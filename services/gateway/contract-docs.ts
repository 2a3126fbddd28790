/**
 * The OpenAPI document's view of an action, from its contract: the success body's schema
 * (proto/json-schema.ts), the success status, the error statuses (the contract names codes
 * of the one error catalog, lib/error-catalog.ts, which gives their statuses), the summary
 * (the rpc's comment) and the tags. What the contract does not say (a non-JSON body's media
 * type, a description) still comes from the action's `openapi` key.
 */
import type protobuf from "protobufjs";
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
    const [summary, ...more] = (c.summary ?? "").split("\n").map((l) => l.trim());
    if (summary) meta.summary = summary.replace(/\.$/, "");
    if (more.some(Boolean) && !meta.description) meta.description = more.filter(Boolean).join(" ");
    if (c.tags.length) meta.tags = c.tags;
    if (c.successStatus) meta.status = c.successStatus;
    const codes = c.errors.map((e) => {
      if (!isCode(e)) throw new Error(`${name}: error ${e} is not in the error catalog`);
      return ERROR_STATUS[e];
    });
    if (codes.length) meta.errors = [...new Set([...(meta.errors ?? []), ...codes])];
    // A JSON body is the response message; a page (HTML, text) keeps its declared media type.
    if (c.response && !meta.contentType) meta.response = messageJsonSchema(c.response as unknown as protobuf.Type);
    out[name] = { ...info, auth: c.auth ?? info.auth, openapi: meta };
  }
  return out;
}
