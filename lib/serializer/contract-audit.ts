/**
 * The contract audit, a diagnostics mode for development and CI: with
 * `MERIDIAN_CONTRACT_AUDIT=<file>` every broker checks each business call's params and
 * result, and each business event written to an outbox, against its contract, also in one
 * process where nothing is serialized, and appends one JSON line per miss to the file
 * (`{kind, name, reason}`). Run a test tier with it to find what would travel as JSON in a
 * cluster (`npm run contracts:audit`). Off by default: it costs a reflection walk per miss.
 */
import fs from "node:fs";
import type protobuf from "protobufjs/light";
import { explainMisfit } from "./contract-codec";
import { contracts, isBusinessAction } from "./contracts-runtime";

const FILE = process.env.MERIDIAN_CONTRACT_AUDIT;

function record(kind: string, name: string, reason: string): void {
  fs.appendFileSync(FILE!, JSON.stringify({ kind, name, reason }) + "\n");
}

/** Why `value` would not travel as its contract message, or null. */
function misfit(type: protobuf.Type | null | undefined, value: unknown): string | null {
  if (value === undefined || Buffer.isBuffer(value)) return null;
  if (type === undefined) return "no contract";
  if (type === null)
    return value !== null ? `answers ${JSON.stringify(value)?.slice(0, 80)} but its contract says google.protobuf.Empty` : null;
  if (value === null) return null;
  return explainMisfit(type, value);
}

function check(kind: string, name: string, type: protobuf.Type | null | undefined, value: unknown): void {
  const why = misfit(type, value);
  if (why) record(kind, name, why);
}

export const contractAuditEnabled = Boolean(FILE);

/** Checks a business event's payload (called by addOutboxEvent when the audit is on). */
export function auditEvent(name: string, payload: unknown): void {
  if (!FILE) return;
  check("EVENT", name, contracts.events.get(name), payload);
}

type Call = (action: unknown, params: unknown, opts: unknown) => Promise<unknown>;

/**
 * The broker middleware; null when the audit is off. Its `call` hook wraps broker.call (and
 * so ctx.call): the params as the caller gives them, the result as the caller gets it.
 */
export function ContractAuditMiddleware(): { name: string; call(next: Call): Call } | null {
  if (!FILE) return null;
  return {
    name: "ContractAudit",
    call(next: Call): Call {
      return (action, params, opts) => {
        // moleculer-web calls with the endpoint it resolved, not the action's name.
        const name = typeof action === "string" ? action : ((action as { action?: { name?: string } } | null)?.action?.name ?? "");
        if (!isBusinessAction(name)) return next(action, params, opts);
        const c = contracts.actions.get(name);
        // A request that does not fit is recorded with its outcome: one the action accepted
        // ("REQ accepted") is valid input that would travel as JSON — a contract to fix; one
        // it refused ("REQ refused") is bad input, which travels as JSON by design.
        const reqMisfit = misfit(c?.request, params);
        return next(action, params, opts).then(
          (result) => {
            if (reqMisfit) record("REQ accepted", name, reqMisfit);
            check("RES", name, c ? c.response : undefined, result);
            return result;
          },
          (err: unknown) => {
            if (reqMisfit) record("REQ refused", name, reqMisfit);
            throw err;
          },
        );
      };
    },
  };
}
