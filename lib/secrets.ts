/**
 * Placeholder secrets are refused where they would matter (cluster mode, NODE_ENV=production):
 * a `change-me` left in a manifest, or an example copied from the docs, is a credential
 * everyone can read. What counts as one, once, for lib/config.ts and the payment platforms'
 * configuration. The limit: this catches the known placeholders, not a weak secret in general.
 */

/** Variables holding a secret outright. */
export const SECRET_VARIABLES = [
  "JWT_SECRET",
  "ADMIN_PASSWORD",
  "ETCD_PASSWORD",
  "ETCD_ROOT_PASSWORD",
  "ELASTIC_SEARCH_PASSWORD",
  "WECHATPAY_API_V3_KEY",
] as const;
/** Variables holding a URL whose password part is a secret. */
export const SECRET_URL_VARIABLES = ["RABBITMQ_URI", "MYSQL_URL", "REDIS_URL", "SMTP_URL"] as const;

/** `change-me` and its spellings, anywhere in the value. */
const CHANGE_ME = /change[-_ .]?me|changeme|replace[-_ ]?me|placeholder/i;
/**
 * Stock example values (the manifests' placeholders all say "change-me"): refused even where
 * they do not.
 */
export const EXAMPLE_SECRETS: readonly string[] = ["secret", "password", "changeit", "example"];

export function isPlaceholder(value: string): boolean {
  const v = value.trim();
  return CHANGE_ME.test(v) || EXAMPLE_SECRETS.includes(v.toLowerCase());
}

/** One problem per placeholder found in `env` (values only checked; names listed above). */
export function placeholderProblems(env: Readonly<Record<string, string | undefined>>): string[] {
  const problems: string[] = [];
  for (const name of SECRET_VARIABLES) {
    const v = env[name];
    if (v && isPlaceholder(v)) problems.push(`${name}: a placeholder, not a secret (generate one, e.g. openssl rand -hex 32)`);
  }
  for (const name of SECRET_URL_VARIABLES) {
    // RABBITMQ_URI may list a cluster's nodes, comma-separated: each URL is checked. (Only
    // it: another URL's password may hold a raw comma.)
    const value = env[name] ?? "";
    for (const v of (name === "RABBITMQ_URI" ? value.split(",") : [value]).map((u) => u.trim()).filter(Boolean)) {
      let password: string;
      try {
        password = decodeURIComponent(new URL(v).password);
      } catch {
        continue; // a malformed URL is reported by its own rule
      }
      if (password && isPlaceholder(password)) {
        problems.push(`${name}: its password is a placeholder; set the server's real password`);
        break;
      }
    }
  }
  return problems;
}
