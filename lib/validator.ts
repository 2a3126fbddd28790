/**
 * Moleculer's fastest-validator, with one rule made strict: `null` is a value, not an
 * absence. fastest-validator (1.19) lets `null` through every `optional` rule, as it lets
 * `undefined`, even without `nullable`; a handler then wrote it to a NOT NULL column (a 500)
 * or spread it into a record (a price of `{}`). Found by the gateway fuzz. Here a `null` for
 * a rule that is not `nullable: true` is a 422 like any other bad value, for every action,
 * at any depth of object `props` and array `items`, so no handler has to remember it.
 */
import { Validators } from "moleculer";

type Rule = Record<string, unknown> | string | boolean | Rule[];
interface Problem {
  type: "nullable";
  field: string;
  message: string;
}

const nullable = (rule: Rule): boolean =>
  Array.isArray(rule)
    ? rule.some(nullable)
    : typeof rule === "string"
      ? /\bnullable\b/.test(rule)
      : typeof rule === "object" && rule.nullable === true;

/** `null` where `rule` does not allow it, under `path`. */
function nullsIn(rule: Rule, value: unknown, path: string, out: Problem[]): void {
  if (value === null) {
    if (!nullable(rule)) out.push({ type: "nullable", field: path, message: `The '${path}' field cannot be null.` });
    return;
  }
  if (typeof rule !== "object" || rule === null || Array.isArray(rule) || value === undefined) return;
  const props = (rule.props ?? rule.properties) as Record<string, Rule> | undefined;
  if (props && value && typeof value === "object" && !Array.isArray(value))
    nullsInProps(props, value as Record<string, unknown>, `${path}.`, out);
  const items = rule.items as Rule | undefined;
  if (items && Array.isArray(value)) value.forEach((v, i) => nullsIn(items, v, `${path}[${i}]`, out));
}

function nullsInProps(schema: Record<string, Rule>, params: Record<string, unknown>, prefix: string, out: Problem[]): void {
  for (const [key, rule] of Object.entries(schema))
    if (!key.startsWith("$$") && key in params) nullsIn(rule, params[key], `${prefix}${key}`, out);
}

type Checker = ((params: unknown, opts?: unknown) => true | Problem[] | Promise<true | Problem[]>) & { async?: boolean };

export class StrictNullValidator extends (Validators.Fastest as unknown as new (opts?: unknown) => {
  compile(schema: Record<string, Rule>): Checker;
}) {
  override compile(schema: Record<string, Rule>): Checker {
    const check = super.compile(schema);
    const wrapped: Checker = (params, opts) => {
      const problems: Problem[] = [];
      if (params && typeof params === "object") nullsInProps(schema, params as Record<string, unknown>, "", problems);
      if (!problems.length) return check(params, opts);
      return check.async ? Promise.resolve(problems) : problems;
    };
    wrapped.async = check.async;
    return wrapped;
  }
}
