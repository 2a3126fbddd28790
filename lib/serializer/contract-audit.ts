/**
 * The contract audit, a diagnostics mode for development and CI: with
 * `MERIDIAN_CONTRACT_AUDIT=<file>` every broker checks each business call's params and
 * result, and each business event written to an outbox, against its contract, also in one
 * process where nothing is serialized, and appends one JSON line per miss to the file
 * (`{kind, name, reason}`). Run a test tier with it to find what would travel as JSON in a
 * cluster (`npm run contracts:audit`). Off by default: it costs a reflection walk per miss.
 */
import fs from "node:fs";
import protobuf from "protobufjs/light";
import descriptor from "../../proto/gen/descriptor.json";
import { readContracts } from "../../proto/registry";
import { explainMisfit } from "./contract-codec";

const FILE = process.env.MERIDIAN_CONTRACT_AUDIT;

let contracts: ReturnType<typeof readContracts> | undefined;
function registry() {
  if (!contracts) {
    const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
    root.resolveAll();
    contracts = readContracts(root as unknown as import("protobufjs").Root);
  }
  return contracts;
}

function record(kind: string, name: string, reason: string): void {
  fs.appendFileSync(FILE!, JSON.stringify({ kind, name, reason }) + "\n");
}

function check(kind: string, name: string, type: protobuf.Type | import("protobufjs").Type | null | undefined, value: unknown): void {
  if (value === undefined || Buffer.isBuffer(value)) return;
  if (type === undefined) return record(kind, name, "no contract");
  if (type === null) {
    if (value !== null) record(kind, name, `answers ${JSON.stringify(value)?.slice(0, 80)} but its contract says google.protobuf.Empty`);
    return;
  }
  if (value === null) return;
  const why = explainMisfit(type as protobuf.Type, value);
  if (why) record(kind, name, why);
}

export const contractAuditEnabled = Boolean(FILE);

/** Checks a business event's payload (called by addOutboxEvent when the audit is on). */
export function auditEvent(name: string, payload: unknown): void {
  if (!FILE) return;
  check("EVENT", name, registry().events.get(name), payload);
}

type Call = (action: unknown, params: unknown, opts: unknown) => Promise<unknown>;

/**
 * The broker middleware; null when the audit is off. Its `call` hook wraps broker.call (and
 * so ctx.call): the params as the caller gives them, the result as the caller gets it.
 */
export function ContractAuditMiddleware(): { name: string; call(next: Call): Call } | null {
  if (!FILE) return null;
  const services = new Set([...registry().actions.keys()].map((a) => a.slice(0, a.indexOf("."))));
  const business = new Set(["user", "product", "cart", "order", "payment", "notification", "search", "recommendation", ...services]);
  return {
    name: "ContractAudit",
    call(next: Call): Call {
      return (action, params, opts) => {
        // moleculer-web calls with the endpoint it resolved, not the action's name.
        const name = typeof action === "string" ? action : ((action as { action?: { name?: string } } | null)?.action?.name ?? "");
        if (!business.has(name.slice(0, name.indexOf(".")))) return next(action, params, opts);
        const c = registry().actions.get(name);
        check("REQ", name, c?.request, params);
        return next(action, params, opts).then((result) => {
          check("RES", name, c ? c.response : undefined, result);
          return result;
        });
      };
    },
  };
}
