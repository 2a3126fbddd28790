/**
 * `npm run race [-- --url URL --units N --orders M]`: the oversell race against a running
 * gateway, for the tutorial (docs/tutorial.md). It creates a product with N units, then sends
 * M orders of one unit each AT ONCE, from buyers who each place up to three (the unpaid-order
 * limit, MAX_UNPAID_ORDERS), and checks what a shop must never get wrong:
 *
 * - no more orders were accepted than there were units (no oversell),
 * - every other order got the contract's clear refusal, 409 OUT_OF_STOCK (never a 5xx),
 * - the product's `reserved` equals the units the accepted orders hold.
 *
 * Then it cancels the accepted orders (their stock comes back) and deletes the product, so a
 * run leaves the shop as it found it. Exit 0 when all holds, 1 when not (naming what broke),
 * 2 on bad options or a failed setup.
 *
 * Needs an admin account (ADMIN_EMAIL and ADMIN_PASSWORD, as `npm start` was given them) to
 * create the product. The buyers are `race-buyer-<i>@example.com`: registered on the first run,
 * logged in on the next ones, so repeated runs do not spend the sign-up limit.
 */
import { parseArgs } from "node:util";

const OPTIONS = {
  url: { type: "string" },
  units: { type: "string", default: "3" },
  orders: { type: "string", default: "18" },
} as const;
/** One buyer may hold this many unpaid orders (MAX_UNPAID_ORDERS' default). */
const ORDERS_PER_BUYER = 3;
const PASSWORD = "race buyer password";
const ADDRESS = {
  recipient: "Race Buyer",
  phone: "+86 10 1234 5678",
  line1: "1 Market Street",
  city: "Shanghai",
  postalCode: "200000",
  country: "CN",
};

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run race -- [--url URL] [--units N] [--orders M]  (ADMIN_EMAIL and ADMIN_PASSWORD set)\n`);
  process.exit(2);
}

interface Answer {
  status: number;
  body: { [k: string]: unknown };
}

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
  if (!Number.isInteger(orders) || orders <= units || orders > 300) usage("--orders: an integer above --units, at most 300");
  const base = (values.url ?? process.env.PUBLIC_URL ?? `http://localhost:${process.env.PORT ?? 3000}`).replace(/\/$/, "");
  const admin = { email: process.env.ADMIN_EMAIL, password: process.env.ADMIN_PASSWORD };
  if (!admin.email || !admin.password)
    usage("ADMIN_EMAIL and ADMIN_PASSWORD: the admin account `npm start` was given (it creates the product)");

  const api = async (method: string, route: string, token?: string, body?: unknown): Promise<Answer> => {
    const res = await fetch(`${base}${route}`, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Answer["body"]) : {} };
  };
  const expect = (a: Answer, status: number, what: string): Answer["body"] => {
    if (a.status !== status) throw new Error(`${what}: ${a.status} ${JSON.stringify(a.body)}`);
    return a.body;
  };
  const login = async (email: string, password: string): Promise<string> =>
    String(expect(await api("POST", "/api/auth/login", undefined, { email, password }), 200, `log in ${email}`).accessToken);

  // ---- setup: the product, the buyers (none of this is the race) ----
  const adminToken = await login(admin.email, admin.password);
  const product = expect(
    await api("POST", "/api/products", adminToken, {
      sku: `RACE-${Date.now().toString(36)}`,
      name: "The last units",
      description: "npm run race",
      category: "Race",
      price: { amount: 1000, currency: "EUR" },
      stock: units,
    }),
    201,
    "create the product (admin)",
  );
  const productId = String(product.id);
  const buyers: string[] = [];
  for (let i = 0; i < Math.ceil(orders / ORDERS_PER_BUYER); i++) {
    const email = `race-buyer-${i}@example.com`;
    const reg = await api("POST", "/api/auth/register", undefined, { email, password: PASSWORD, name: `Race buyer ${i}` });
    // 409: registered by an earlier run.
    if (reg.status !== 201 && reg.status !== 409) expect(reg, 201, `register ${email}`);
    const token = reg.status === 201 ? String(reg.body.accessToken) : await login(email, PASSWORD);
    // A run stopped halfway may have left this buyer unpaid orders: they count against the limit.
    const mine = expect(await api("GET", "/api/orders?limit=100", token), 200, "list the buyer's orders");
    const items = (Array.isArray(mine) ? mine : (mine.items as unknown[])) as { id: string; status: string }[];
    for (const o of items.filter((o) => o.status === "PENDING_PAYMENT"))
      expect(await api("POST", `/api/orders/${o.id}/cancel`, token), 200, "cancel a leftover order");
    buyers.push(token);
  }
  process.stdout.write(`${units} units of product ${productId}; ${orders} orders of one unit from ${buyers.length} buyers, all at once…\n`);

  // ---- the race: every order at once ----
  const answers = await Promise.all(
    Array.from({ length: orders }, (_, i) =>
      api("POST", "/api/orders", buyers[i % buyers.length], { items: [{ productId, quantity: 1 }], shippingAddress: ADDRESS }).then(
        (a) => ({ ...a, token: buyers[i % buyers.length] }),
      ),
    ),
  );
  const accepted = answers.filter((a) => a.status === 201);
  const refused = answers.filter((a) => a.status === 409 && (a.body.error as { code?: string } | undefined)?.code === "OUT_OF_STOCK");
  const other = answers.filter((a) => !accepted.includes(a) && !refused.includes(a));
  const stock = expect(await api("GET", `/api/products/${productId}`), 200, "read the product").stock as {
    onHand: number;
    reserved: number;
  };

  const problems: string[] = [];
  if (accepted.length > units) problems.push(`OVERSOLD: ${accepted.length} orders accepted for ${units} units`);
  if (stock.reserved !== accepted.length)
    problems.push(`the product has ${stock.reserved} units reserved, the accepted orders hold ${accepted.length}`);
  if (stock.reserved > stock.onHand) problems.push(`more reserved (${stock.reserved}) than on hand (${stock.onHand})`);
  if (other.length) {
    const kinds = new Map<string, number>();
    for (const a of other) {
      const key = `${a.status} ${(a.body.error as { code?: string } | undefined)?.code ?? ""}`.trim();
      kinds.set(key, (kinds.get(key) ?? 0) + 1);
    }
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

  // ---- leave the shop as it was ----
  for (const a of accepted) expect(await api("POST", `/api/orders/${String(a.body.id)}/cancel`, a.token), 200, "cancel an accepted order");
  expect(await api("DELETE", `/api/products/${productId}`, adminToken), 204, "delete the product (admin)");

  if (problems.length) {
    process.stdout.write(`FAILED:\n${problems.map((p) => `  - ${p}`).join("\n")}\n`);
    return 1;
  }
  process.stdout.write(
    `OK: ${accepted.length} of ${units} units sold, the other ${refused.length} buyers told OUT_OF_STOCK, nothing oversold.\n`,
  );
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`race: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
