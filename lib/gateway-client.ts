/**
 * The command-line tools' client of a running gateway (`npm run recs:rebuild`, `npm run race`):
 * which gateway (`--url`, else PUBLIC_URL, else localhost on PORT), and one JSON call.
 */

/** The gateway's base URL, without a trailing slash. */
export function gatewayUrl(url: string | undefined): string {
  return (url ?? process.env.PUBLIC_URL ?? `http://localhost:${process.env.PORT ?? 3000}`).replace(/\/$/, "");
}

/**
 * One call; `body` is the parsed answer (the raw text when it is not JSON, as a proxy's error
 * page would be), whose shape the caller checks by its status.
 */
export async function api<T = unknown>(
  base: string,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed as T };
}
