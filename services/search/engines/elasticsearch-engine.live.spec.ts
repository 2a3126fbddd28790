/**
 * `npm run search:conformance`: the engine conformance suite (conformance.ts, the one the
 * in-process engine passes in every `npm test`) against a live Elasticsearch at
 * ELASTIC_SEARCH_NODE (with ELASTIC_SEARCH_USERNAME / _PASSWORD when it wants them), for anyone
 * who has one. Opt-in and outside `npm test`'s tiers (the file name matches none of them): no
 * Elasticsearch can be run on the machines this project is tested on, so there the engine is
 * checked against recorded responses (elasticsearch-engine.unit.spec.ts), and this file is only
 * type-checked.
 *
 * Each run writes to an index of its own (meridian-conformance-<random>), with every write
 * refreshed before it returns so a search sees it, and deletes that index at the end.
 */
import { randomBytes } from "node:crypto";
import { after, before } from "mocha";
import { engineConformance } from "./conformance";
import { createElasticsearchClient, ElasticsearchEngine } from "./elasticsearch-engine";

const node = process.env.ELASTIC_SEARCH_NODE;
if (!node) {
  // Not a skip: this run was asked for, and without a server it has proven nothing.
  throw new Error(
    "npm run search:conformance needs a live Elasticsearch: set ELASTIC_SEARCH_NODE (and ELASTIC_SEARCH_USERNAME/_PASSWORD if it asks)",
  );
}
const client = createElasticsearchClient(node, process.env.ELASTIC_SEARCH_USERNAME, process.env.ELASTIC_SEARCH_PASSWORD);
const index = `meridian-conformance-${randomBytes(4).toString("hex")}`;

before(async () => {
  const info = await client.info();
  process.stdout.write(`  Elasticsearch ${info.version.number} at ${node}, index ${index}\n`);
});
after(async () => {
  await client.indices.delete({ index, ignore_unavailable: true });
  await client.close();
});

engineConformance("ElasticsearchEngine (live)", async () => new ElasticsearchEngine({ client, index, refresh: true }));
