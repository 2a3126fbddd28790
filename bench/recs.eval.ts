/**
 * `npm run eval:recs [-- --users 7000 --products 2000 --seed N --no-record]`: offline
 * evaluation of the recommendation service against baselines, on synthetic purchase
 * histories (bench/recs-data.ts says why synthetic and what structure the data has).
 *
 * Protocol (leave-last-out): for every user with at least two orders, the LAST order's
 * products are held out; everything else (all other users' orders included) is training
 * data. Each method recommends 10 products per evaluated user, never one the user bought in
 * training; hit rate@10 = share of users with a held-out product among the 10; NDCG@10 with
 * binary relevance. Methods:
 * - service: the real recommendation service (its SQLite database, its rebuild path from
 *   `order.exportPurchases`, its `rank` action with the user's stated preferences);
 * - service, no preferences: the same without them (what the preferences add);
 * - popularity: most bought products overall (distinct buyers in training);
 * - popularity in preferred categories: those first, then overall;
 * - random: uniformly among products not bought.
 * The dataset reaches the service through two stand-in actions of this process,
 * `product.export` and `order.exportPurchases`, answering from the generated data in the
 * shapes of the real ones: that is the offline data source, not a test double.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import { createBroker } from "../app";
import { loadConfig, type AppConfig } from "../lib/config";
import { hitAtK, ndcgAtK } from "../services/recommendation/recommendation.domain";
import { generate, prng, type Dataset } from "./recs-data";
import { rebuildRecommendations } from "../lib/operations";
import { progressSteps } from "../lib/progress";
import { appendResults, markdownTable } from "./support";

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};

interface Split {
  train: { orderId: string; userId: string; paidAt: number; productIds: string[] }[];
  evaluated: { userId: string; heldOut: Set<string>; bought: Set<string>; preferences: { categories: string[]; brands: string[] } }[];
}

export function split(data: Dataset): Split {
  const train: Split["train"] = [];
  const evaluated: Split["evaluated"] = [];
  for (const u of data.users) {
    const last = u.orders.length >= 2 ? u.orders[u.orders.length - 1] : undefined;
    const bought = new Set<string>();
    for (const o of u.orders) {
      if (o === last) continue;
      train.push({ orderId: o.orderId, userId: u.id, paidAt: o.at, productIds: o.productIds });
      for (const p of o.productIds) bought.add(p);
    }
    if (last) evaluated.push({ userId: u.id, heldOut: new Set(last.productIds), bought, preferences: u.preferences });
  }
  train.sort((a, b) => (a.orderId < b.orderId ? -1 : 1));
  return { train, evaluated };
}

/** The dataset in the shapes of `product.export` and `order.exportPurchases` (keyset pages). */
export function datasetSources(data: Dataset, orders: Split["train"]) {
  const products = [...data.products].sort((a, b) => (a.id < b.id ? -1 : 1));
  const now = new Date().toISOString();
  const page = <T>(rows: T[], key: (r: T) => string, after: string | undefined, limit: number) => {
    const start = after ? rows.findIndex((r) => key(r) > after) : 0;
    const items = start < 0 ? [] : rows.slice(start, start + limit);
    return { items, next: items.length === limit ? key(items[items.length - 1]) : null };
  };
  return {
    product: {
      name: "product",
      actions: {
        export: (ctx: { params: { after?: string; limit?: number } }) => {
          const r = page(products, (p) => p.id, ctx.params.after, ctx.params.limit ?? 500);
          return {
            next: r.next,
            items: r.items.map((p) => ({
              id: p.id,
              sku: p.id,
              name: p.name,
              description: "",
              category: p.category,
              brand: p.brand,
              tags: [],
              price: { amount: 1000, currency: "EUR" },
              images: [],
              stock: { onHand: 100, reserved: 0, available: 100 },
              createdAt: now,
              updatedAt: now,
              version: 1,
            })),
          };
        },
      },
    },
    order: {
      name: "order",
      actions: {
        exportPurchases: (ctx: { params: { after?: string; limit?: number } }) => {
          const r = page(orders, (o) => o.orderId, ctx.params.after, ctx.params.limit ?? 1000);
          return { ...r, ...(ctx.params.after ? {} : { total: orders.length }) };
        },
      },
    },
  };
}

/** Starts an embedded broker with the recommendation service and the dataset's sources, and rebuilds the model. */
export async function loadModel(
  data: Dataset,
  train: Split["train"],
  label: string,
  given?: AppConfig,
): Promise<{ broker: ServiceBroker; dataDir: string; rebuildMs: number }> {
  const dataDir = given?.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "meridian-recs-"));
  const config = given ?? loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: "warn", DEMO_CATALOG: "false", PORT: "0" });
  const broker = createBroker(config, ["recommendation"]);
  for (const s of Object.values(datasetSources(data, train))) broker.createService(s as never);
  await broker.start();
  return { broker, dataDir, rebuildMs: await rebuildWithProgress(broker, label) };
}

/** Starts the service's rebuild and shows its progress until it is done; returns its duration (ms). */
export async function rebuildWithProgress(broker: ServiceBroker, label: string): Promise<number> {
  return rebuildRecommendations(broker, label, (line) => process.stderr.write(`${line}\n`));
}

interface Score {
  hits: number;
  ndcg: number;
}

async function main(): Promise<void> {
  const users = arg("users", 7000);
  const productsN = arg("products", 2000);
  const seed = arg("seed", 20261125);
  const record = !process.argv.includes("--no-record");
  const data = generate({ users, products: productsN, seed });
  const { train, evaluated } = split(data);
  process.stderr.write(
    `Data: ${data.users.length} users, ${data.products.length} products, ${data.orders} orders; ${evaluated.length} users evaluated (each has ≥ 2 orders), ${train.length} training orders\n`,
  );
  if (evaluated.length < 5000 || data.products.length < 2000)
    throw new Error("the evaluation needs at least 5,000 evaluated users and 2,000 products");

  // Baselines' popularity: distinct buyers per product in training.
  const buyers = new Map<string, Set<string>>();
  for (const o of train) for (const p of o.productIds) (buyers.get(p) ?? buyers.set(p, new Set()).get(p)!).add(o.userId);
  const byPopularity = data.products
    .map((p) => p.id)
    .sort((a, b) => (buyers.get(b)?.size ?? 0) - (buyers.get(a)?.size ?? 0) || (a < b ? -1 : 1));
  const categoryOf = new Map(data.products.map((p) => [p.id, p.category]));
  const random = prng(seed + 1);

  const methods = ["service", "service, no preferences", "popularity", "popularity in preferred categories", "random"] as const;
  const scores = new Map<string, Score>(methods.map((m) => [m, { hits: 0, ndcg: 0 }]));
  const add = (m: string, recs: string[], held: Set<string>) => {
    const s = scores.get(m)!;
    s.hits += hitAtK(recs, held);
    s.ndcg += ndcgAtK(recs, held);
  };

  const { broker, dataDir, rebuildMs } = await loadModel(data, train, "Service");
  const evaluating = progressSteps();
  const started = Date.now();
  try {
    for (const [i, u] of evaluated.entries()) {
      const mine = await broker.call<
        {
          productId: string;
        }[],
        unknown
      >("recommendation.rank", { userId: u.userId, limit: 10, preferences: u.preferences });
      const plain = await broker.call<{ productId: string }[], unknown>("recommendation.rank", { userId: u.userId, limit: 10 });
      for (const r of mine)
        if (u.bought.has(r.productId)) throw new Error(`the service recommended ${r.productId}, which ${u.userId} bought`);
      add(
        "service",
        mine.map((r) => r.productId),
        u.heldOut,
      );
      add(
        "service, no preferences",
        plain.map((r) => r.productId),
        u.heldOut,
      );
      const notBought = (ids: string[]) => ids.filter((p) => !u.bought.has(p));
      add("popularity", notBought(byPopularity).slice(0, 10), u.heldOut);
      const prefs = new Set(u.preferences.categories);
      const preferredFirst = [
        ...byPopularity.filter((p) => prefs.has(categoryOf.get(p)!)),
        ...byPopularity.filter((p) => !prefs.has(categoryOf.get(p)!)),
      ];
      add("popularity in preferred categories", notBought(preferredFirst).slice(0, 10), u.heldOut);
      const pick = new Set<string>();
      while (pick.size < 10) {
        const p = data.products[Math.floor(random() * data.products.length)].id;
        if (!u.bought.has(p)) pick.add(p);
      }
      add("random", [...pick], u.heldOut);
      if (i % 100 === 0 || i === evaluated.length - 1) evaluating("Evaluating", i + 1, evaluated.length);
    }
  } finally {
    await broker.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }

  const n = evaluated.length;
  const pop = scores.get("popularity")!.hits / n;
  const rows = methods.map((m) => {
    const s = scores.get(m)!;
    const hr = s.hits / n;
    return [m, (hr * 100).toFixed(2) + " %", (s.ndcg / n).toFixed(4), pop > 0 ? `${(hr / pop).toFixed(2)}×` : "n/a"];
  });
  const table = markdownTable(["method", "hit rate@10", "NDCG@10", "hit rate vs popularity"], rows, [false, true, true, true]);
  const stated = data.users.filter((u) => u.preferences.categories.length || u.preferences.brands.length).length;
  const section = [
    "",
    `## Recommendation quality (\`npm run eval:recs\`), ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
    "",
    `Synthetic data (bench/recs-data.ts, seed ${seed}): ${data.users.length} users (${stated} with stated preferences), ${data.products.length} products, ${data.orders} orders; leave-last-order-out on the ${n} users with at least two orders (${train.length} training orders). Model rebuilt through the service's rebuild path in ${(rebuildMs / 1000).toFixed(1)} s; ${n} × 2 rankings through \`recommendation.rank\` in ${((Date.now() - started) / 1000).toFixed(1)} s.`,
    "",
    table,
    "",
  ].join("\n");
  process.stdout.write(`${section}\n`);
  if (record) appendResults(section);
}

if (require.main === module)
  main().catch((err) => {
    process.stderr.write(`\neval:recs failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
