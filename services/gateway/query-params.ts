/**
 * Query strings carry only strings ("2" for `?page=2`), while the contracts say `int32
 * page`: a request with a query would travel to its action as JSON (not fitting its
 * contract) and be converted by the validator there. The gateway converts instead, from the
 * contract: a canonical number (`String(Number(v)) === v`) for a numeric field, `true` /
 * `false` for a bool. Only on requests without a body (GET, DELETE, HEAD), whose actions
 * read their params from the query and convert them anyway: on a POST, a query value
 * (which moleculer-web merges over the body's) stays a string, so an action without
 * `convert` still refuses it with 422 as before. Anything else is left as sent.
 */
import { contracts } from "../../lib/serializer/contracts-runtime";
import { NUMBER_TYPES } from "../../proto/registry";

/** Field name → "number" | "bool", per action, for the scalar fields of its request. */
const kinds = new Map<string, Map<string, "number" | "bool">>();
function kindsOf(action: string): Map<string, "number" | "bool"> | undefined {
  let k = kinds.get(action);
  if (k) return k;
  const request = contracts.actions.get(action)?.request;
  if (!request) return undefined;
  k = new Map();
  for (const f of request.fieldsArray) {
    if (f.repeated) continue;
    if (NUMBER_TYPES.has(f.type)) k.set(f.name, "number");
    else if (f.type === "bool") k.set(f.name, "bool");
  }
  kinds.set(action, k);
  return k;
}

/** Converts, in place, the query-string values of `params` that the action's contract types as numbers or booleans. */
export function convertQueryParams(
  method: string | undefined,
  action: string,
  params: Record<string, unknown>,
  query: Record<string, unknown> | undefined,
): void {
  if (!query || (method !== "GET" && method !== "DELETE" && method !== "HEAD")) return;
  const k = kindsOf(action);
  if (!k?.size) return;
  for (const key of Object.keys(query)) {
    const v = params[key];
    if (typeof v !== "string") continue;
    const kind = k.get(key);
    if (kind === "number") {
      const n = Number(v);
      if (v !== "" && String(n) === v && Number.isFinite(n)) params[key] = n;
    } else if (kind === "bool" && (v === "true" || v === "false")) params[key] = v === "true";
  }
}
