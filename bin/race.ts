/**
 * `npm run race [-- --url URL --units N --orders M]`: the oversell race against a running
 * gateway, for the tutorial (docs/tutorial.md). It creates a product with N units, then sends
 * M orders of one unit each AT ONCE, from buyers who each place up to three (the unpaid-order
 * limit, MAX_UNPAID_ORDERS), and checks what a shop must never get wrong:
 *
 * - exactly as many orders were accepted as there were units (none oversold, none refused
 *   while a unit was left),
 * - every other order got the contract's clear refusal, 409 OUT_OF_STOCK (never a 5xx),
 * - the product's `reserved` equals the units the accepted orders hold.
 *
 * Then it cancels the accepted orders (their stock comes back) and deletes the product, so a
 * run leaves the shop as it found it, also when it stops halfway. Exit 0 when all holds, 1 when not (naming what broke),
 * 2 on bad options or a failed setup.
 *
 * Needs an admin account (ADMIN_EMAIL and ADMIN_PASSWORD, as `npm start` was given them) to
 * create the product. The buyers are `race-buyer-<i>@example.com`: registered on the first run,
 * logged in on the next ones, so repeated runs do not spend the sign-up limit.
 */
import { parseArgs } from "node:util";
import { api, gatewayUrl } from "../lib/gateway-client";
import { SHIPPING_ADDRESS } from "../test/support/fixtures";

const OPTIONS = {
  url: { type: "string" },
  units: { type: "string", default: "3" },
  orders: { type: "string", default: "18" },
} as const;
/** One buyer may hold this many unpaid orders (MAX_UNPAID_ORDERS' default). */
const ORDERS_PER_BUYER = 3;
/** Ten buyers at most: the sign-up limit's default is 10 per address per 10 minutes. */
const MAX_ORDERS = 10 * ORDERS_PER_BUYER;
const PASSWORD = "race buyer password";

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run race -- [--url URL] [--units N] [--orders M]  (ADMIN_EMAIL and ADMIN_PASSWORD set)\n`);
  process.exit(2);
}

type Body = { [k: string]: unknown } | undefined;
interface Answer {
  status: number;
  body: Body;
}
const codeOf = (a: Answer) => ((a.body?.error as { code?: string } | undefined)?.code ?? "").trim();

async function main(): Promise<number> {
  const values = (() => {
    try {
      return parseArgs({ options: OPTIONS, strict: true, allowPositionals: false }).values;
    } catch (err) {
      return usage(err instanceof Error ? err.message : String(err));
    }
  })();
  const units = Number(values.units);
  const orders = Number(values.orders);
  if (!Number.isInteger(units) || units < 1 || units > 1000) usage("--units: an integer from 1 to 1000");
  if (!Number.isInteger(orders) || orders <= units || orders > MAX_ORDERS)
    usage(`--orders: an integer above --units, at most ${MAX_ORDERS}`);
  const base = gatewayUrl(values.url);
  const admin = { email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD };
  if (!admin.email || !admin.password)
    usage("ADMIN_EMAIL and ADMIN_PASSWORD: the admin account `npm start` was given (it creates the product)");

  const call = (method: string, route: string, token?: string, body?: unknown): Promise<Answer> =>
    api<Body>(base, method, route, token, body);
  /** The answer's JSON body, when it has `status` (a 204 has none: `{}`); else what went wrong. */
  const expect = (a: Answer, status: number, what: string): NonNullable<Body> => {
    if (a.status === status && status === 204) return {};
    if (a.status !== status || typeof a.body !== "object") throw new Error(`${what}: ${a.status} ${JSON.stringify(a.body)}`);
    return a.body;
  };
  const login = async (email: string, password: string): Promise<string> =>
    String(expect(await call("POST", "/api/auth/login", undefined, { email, password }), 200, `log in ${email}`).accessToken);

  // ---- setup: the buyers, then the product (none of this is the race) ----
  const adminToken = await login(admin.email, admin.password);
  const buyers: string[] = [];
  for (let i = 0; i < Math.ceil(orders / ORDERS_PER_BUYER); i++) {
    const email = `race-buyer-${i}@example.com`;
    const reg = await call("POST", "/api/auth/register", undefined, { email, password: PASSWORD, name: `Race buyer ${i}` });
    // 409: registered by an earlier run.
    if (reg.status !== 201 && reg.status !== 409) expect(reg, 201, `register ${email}`);
    const token = reg.status === 201 ? String(reg.body?.accessToken) : await login(email, PASSWORD);
    // A run stopped halfway may have left this buyer unpaid orders: they count against the limit.
    const unpaid = expect(
      await call("GET", "/api/orders?status=PENDING_PAYMENT&pageSize=100", token),
      200,
      "list the buyer's unpaid orders",
    );
    for (const o of (unpaid.items ?? []) as { id: string }[])
      expect(await call("POST", `/api/orders/${o.id}/cancel`, token), 200, "cancel a leftover order");
    buyers.push(token);
  }
  const productId = String(
    expect(
      await call("POST", "/api/products", adminToken, {
        sku: `RACE-${Date.now().toString(36)}`,
        name: "The last units",
        description: "npm run race",
        category: "Race",
        price: { amount: 1000, currency: "EUR" },
        stock: units,
      }),
      201,
      "create the product (admin)",
    ).id,
  );
  const accepted: { id: string; token: string }[] = [];
  try {
    process.stdout.write(
      `${units} units of product ${productId}; ${orders} orders of one unit from ${buyers.length} buyers, all at once…\n`,
    );

    // ---- the race: every order at once ----
    const answers = await Promise.all(
      Array.from({ length: orders }, async (_, i) => {
        const token = buyers[i % buyers.length];
        const a = await call("POST", "/api/orders", token, { items: [{ productId, quantity: 1 }], shippingAddress: SHIPPING_ADDRESS });
        if (a.status === 201) accepted.push({ id: String(a.body?.id), token });
        return a;
      }),
    );
    const refused = answers.filter((a) => a.status === 409 && codeOf(a) === "OUT_OF_STOCK");
    const other = answers.filter((a) => a.status !== 201 && !refused.includes(a));
    const stock = expect(await call("GET", `/api/products/${productId}`), 200, "read the product").stock as {
      onHand: number;
      reserved: number;
    };

    const problems: string[] = [];
    if (accepted.length > units) problems.push(`OVERSOLD: ${accepted.length} orders accepted for ${units} units`);
    else if (accepted.length < units && !other.length)
      problems.push(`only ${accepted.length} of ${units} units sold: buyers were told OUT_OF_STOCK while units were left`);
    if (stock.reserved !== accepted.length)
      problems.push(`the product has ${stock.reserved} units reserved, the accepted orders hold ${accepted.length}`);
    if (stock.reserved > stock.onHand) problems.push(`more reserved (${stock.reserved}) than on hand (${stock.onHand})`);
    if (other.length) {
      const kinds = new Map<string, number>();
      for (const a of other) kinds.set(`${a.status} ${codeOf(a)}`.trim(), (kinds.get(`${a.status} ${codeOf(a)}`.trim()) ?? 0) + 1);
      problems.push(`answers other than 201 or 409 OUT_OF_STOCK: ${[...kinds].map(([k, n]) => `${n} × ${k}`).join(", ")}`);
    }
    process.stdout.write(
      [
        `accepted (201):             ${accepted.length}`,
        `refused (409 OUT_OF_STOCK): ${refused.length}`,
        `anything else:              ${other.length}`,
        `stock now:                  onHand ${stock.onHand}, reserved ${stock.reserved}`,
        "",
      ].join("\n"),
    );
    if (problems.length) {
      process.stdout.write(`FAILED:\n${problems.map((p) => `  - ${p}`).join("\n")}\n`);
      return 1;
    }
    process.stdout.write(
      `OK: ${accepted.length} of ${units} units sold, the other ${refused.length} orders refused with OUT_OF_STOCK, nothing oversold.\n`,
    );
    return 0;
  } finally {
    // ---- leave the shop as it was ----
    for (const o of accepted) expect(await call("POST", `/api/orders/${o.id}/cancel`, o.token), 200, "cancel an accepted order");
    expect(await call("DELETE", `/api/products/${productId}`, adminToken), 204, "delete the product (admin)");
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`race: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
