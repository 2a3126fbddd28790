import { it } from "mocha";
import assert from "node:assert/strict";

import {
  buildOpenApiDocument,
  fastestValidatorToJsonSchema,
  toOpenApi30Schema,
  type ActionInfo,
  type BuildOpenApiOptions,
  type FvParamsSchema,
  type JsonSchema,
  type OpenApiDocument,
  type OpenApiOperation,
} from "./openapi";

// The validator package is ESM-only; a dynamic import() is how CommonJS code loads it.
async function validateOpenApi(document: unknown): Promise<{ valid: boolean; errors?: unknown }> {
  const { Validator } = await import("@seriousme/openapi-schema-validator");
  const validator = new Validator();
  // Clone: the validator keeps (and may annotate) the object it is given.
  return validator.validate(structuredClone(document) as Record<string, unknown>);
}

function operation(doc: OpenApiDocument, method: "get" | "post" | "put" | "patch" | "delete", path: string): OpenApiOperation {
  const op = doc.paths[path]?.[method];
  assert.ok(op, `missing operation ${method.toUpperCase()} ${path}`);
  return op;
}

// ------------------------------------------------------------------- converter

it("shorthand strings: type, optional, args, no- flags, array shorthand", () => {
  const schema = fastestValidatorToJsonSchema({
    name: "string|min:3|max:50|trim:true",
    nick: "string|optional",
    note: "string|no-empty",
    count: "number|integer:true|convert:true|min:1",
    tags: "string[]",
  });
  assert.deepEqual(schema, {
    type: "object",
    properties: {
      name: { type: "string", minLength: 3, maxLength: 50 },
      nick: { type: "string" },
      note: { type: "string", minLength: 1 },
      count: { type: "integer", minimum: 1 },
      tags: { type: "array", items: { type: "string" } },
    },
    required: ["name", "note", "count", "tags"],
  });
});

it("object rules: nested props, $$strict, strict, defaults, nullable", () => {
  const schema = fastestValidatorToJsonSchema({
    $$strict: true,
    page: { type: "number", integer: true, positive: true, convert: true, default: 1 },
    filter: {
      type: "object",
      strict: true,
      props: {
        brand: { type: "string", optional: true, nullable: true },
        inStock: { type: "boolean", convert: true },
      },
    },
    loose: { type: "object", strict: "remove", props: { a: "any" } },
    meta: { $$type: "object|optional", source: "string" },
  });
  assert.deepEqual(schema, {
    type: "object",
    additionalProperties: false,
    properties: {
      page: { type: "integer", minimum: 0, exclusiveMinimum: true, default: 1 },
      filter: {
        type: "object",
        additionalProperties: false,
        properties: { brand: { type: "string", nullable: true }, inStock: { type: "boolean" } },
        required: ["inStock"],
      },
      loose: { type: "object", properties: { a: {} }, required: ["a"] },
      meta: { type: "object", properties: { source: { type: "string" } }, required: ["source"] },
    },
    // `page` has a default (FV fills it in) and `meta` is optional: neither is required.
    required: ["filter", "loose"],
  });
});

it("string formats and constraints", () => {
  const convert = (rule: FvParamsSchema[string]): JsonSchema => {
    const props = fastestValidatorToJsonSchema({ x: rule }).properties;
    return (props?.x ?? {}) as JsonSchema;
  };
  assert.deepEqual(convert("email"), { type: "string", format: "email" });
  assert.deepEqual(convert({ type: "email", max: 254 }), { type: "string", format: "email", maxLength: 254 });
  assert.deepEqual(convert("uuid"), { type: "string", format: "uuid" });
  assert.deepEqual(convert("url"), { type: "string", format: "uri" });
  assert.deepEqual(convert("date"), { type: "string", format: "date-time" });
  assert.deepEqual(convert({ type: "string", length: 2 }), { type: "string", minLength: 2, maxLength: 2 });
  assert.deepEqual(convert({ type: "string", pattern: /^[A-Z]{3}$/ }), { type: "string", pattern: "^[A-Z]{3}$" });
  assert.deepEqual(convert({ type: "string", pattern: /^abc$/i }), {
    type: "string",
    pattern: "^abc$",
    description: "Pattern flags: i.",
  });
  assert.deepEqual(convert({ type: "string", enum: ["a", "b"] }), { type: "string", enum: ["a", "b"] });
  assert.deepEqual(convert({ type: "string", alphanum: true }), { type: "string", pattern: "^[a-zA-Z0-9]+$" });
  assert.deepEqual(convert({ type: "string", label: "Postal code", description: "Where to ship." }), {
    type: "string",
    title: "Postal code",
    description: "Where to ship.",
  });
});

it("number, boolean, enum, equal, any, array, record, multi", () => {
  const props = fastestValidatorToJsonSchema({
    price: { type: "number", min: 0, max: 1000000, integer: true },
    delta: { type: "number", negative: true },
    flag: "boolean|convert:true",
    sort: { type: "enum", values: ["newest", "price_asc", "price_desc"], optional: true },
    level: { type: "enum", values: [1, 2, 3] },
    agree: { type: "equal", value: true },
    anything: "any",
    items: { type: "array", items: { type: "object", props: { productId: "string", quantity: "number|integer|min:1" } }, min: 1, max: 50 },
    colors: { type: "array", enum: ["red", "green"], unique: true },
    labels: { type: "record", key: "string", value: "number" },
    idOrNumber: ["string", "number"],
    either: { type: "multi", rules: ["email", { type: "string", length: 11 }] },
    status: { type: "enum", values: ["A", "B"], nullable: true },
  }).properties;
  assert.deepEqual(props?.price, { type: "integer", minimum: 0, maximum: 1000000 });
  assert.deepEqual(props?.delta, { type: "number", maximum: 0, exclusiveMaximum: true });
  assert.deepEqual(props?.flag, { type: "boolean" });
  assert.deepEqual(props?.sort, { type: "string", enum: ["newest", "price_asc", "price_desc"] });
  assert.deepEqual(props?.level, { type: "integer", enum: [1, 2, 3] });
  assert.deepEqual(props?.agree, { type: "boolean", enum: [true] });
  assert.deepEqual(props?.anything, {});
  assert.deepEqual(props?.items, {
    type: "array",
    minItems: 1,
    maxItems: 50,
    items: {
      type: "object",
      properties: { productId: { type: "string" }, quantity: { type: "integer", minimum: 1 } },
      required: ["productId", "quantity"],
    },
  });
  assert.deepEqual(props?.colors, { type: "array", items: { enum: ["red", "green"] }, uniqueItems: true });
  assert.deepEqual(props?.labels, { type: "object", additionalProperties: { type: "number" } });
  assert.deepEqual(props?.idOrNumber, { anyOf: [{ type: "string" }, { type: "number" }] });
  assert.deepEqual(props?.either, {
    anyOf: [
      { type: "string", format: "email" },
      { type: "string", minLength: 11, maxLength: 11 },
    ],
  });
  // 3.0: nullable alone does not admit null into an enum, so null is listed.
  assert.deepEqual(props?.status, { type: "string", enum: ["A", "B", null], nullable: true });
});

it("multi/array-of-rules is optional only when every alternative is", () => {
  const schema = fastestValidatorToJsonSchema({
    a: ["string|optional", "number|optional"],
    b: ["string|optional", "number"],
  });
  assert.deepEqual(schema.required, ["b"]);
});

it("unknown, custom and exotic rules never throw", () => {
  const cyclic: { type: string; props: Record<string, unknown> } = { type: "object", props: {} };
  cyclic.props.self = cyclic;
  const schema = fastestValidatorToJsonSchema({
    weird: { type: "frobnicate" },
    untyped: { min: 3 },
    fn: { type: "function" },
    klass: { type: "class", instanceOf: Date },
    custom: { type: "custom", check: () => true },
    forbidden: "forbidden",
    tuple: { type: "tuple", items: ["number", "number"] },
    objectId: "objectID",
    cyclic,
    nothing: 42,
    withFnDefault: { type: "date", default: () => new Date() },
  });
  const props = schema.properties ?? {};
  assert.deepEqual(props.weird, { description: 'Unknown validation rule type "frobnicate".' });
  assert.deepEqual(props.untyped, { description: "Validation rule without a type." });
  assert.match((props.fn as JsonSchema).description ?? "", /function/);
  assert.deepEqual(props.forbidden, { not: {}, description: "Must not be sent." });
  assert.deepEqual(props.tuple, {
    type: "array",
    items: { anyOf: [{ type: "number" }, { type: "number" }] },
    minItems: 2,
    maxItems: 2,
    description: "Tuple (elements in the listed order).",
  });
  assert.deepEqual(props.objectId, { type: "string", pattern: "^[0-9a-fA-F]{24}$" });
  // A function default cannot be documented but still makes the field optional.
  assert.deepEqual(props.withFnDefault, { type: "string", format: "date-time" });
  assert.ok(!schema.required?.includes("withFnDefault"));
  assert.ok(!schema.required?.includes("forbidden"));
  // Serialisable (no functions, no cycles).
  assert.doesNotThrow(() => JSON.stringify(schema));
});

it("$$root schemas and a bare rule convert as a single rule", () => {
  assert.deepEqual(fastestValidatorToJsonSchema({ $$root: true, type: "string", min: 2 }), { type: "string", minLength: 2 });
  assert.deepEqual(fastestValidatorToJsonSchema("number|optional"), { type: "number" });
  assert.deepEqual(fastestValidatorToJsonSchema({}), { type: "object", properties: {} });
});

it("toOpenApi30Schema rewrites JSON Schema 2020 habits into 3.0", () => {
  assert.deepEqual(
    toOpenApi30Schema({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      required: ["id"],
      properties: {
        id: { type: "string", examples: ["u_1"] },
        brand: { type: ["string", "null"] },
        kind: { const: "customer" },
        score: { type: "number", exclusiveMinimum: 0 },
        list: { type: "array" },
        mixed: { type: ["string", "integer"] },
      },
    }),
    {
      type: "object",
      properties: {
        id: { type: "string", example: "u_1" },
        brand: { type: "string", nullable: true },
        kind: { enum: ["customer"] },
        score: { type: "number", minimum: 0, exclusiveMinimum: true },
        list: { type: "array", items: {} },
        mixed: { anyOf: [{ type: "string" }, { type: "integer" }] },
      },
      required: ["id"],
    },
  );
});

// ------------------------------------------------------------------- document

const USER_SCHEMA: JsonSchema = {
  type: "object",
  required: ["id", "email", "name", "role", "preferences", "createdAt"],
  properties: {
    id: { type: "string" },
    email: { type: "string", format: "email" },
    name: { type: "string" },
    role: { type: "string", enum: ["customer", "admin"] },
    preferences: {
      type: "object",
      properties: {
        categories: { type: "array", items: { type: "string" } },
        brands: { type: "array", items: { type: "string" } },
      },
    },
    createdAt: { type: "string", format: "date-time" },
  },
};

const AUTH_RESPONSE: JsonSchema = {
  type: "object",
  required: ["user", "accessToken", "refreshToken"],
  properties: { user: USER_SCHEMA, accessToken: { type: "string" }, refreshToken: { type: "string" } },
};

const ADDRESS_PARAMS: FvParamsSchema = {
  recipient: "string|min:1|max:100",
  phone: "string|min:3|max:30",
  line1: "string|min:1|max:200",
  line2: "string|optional|max:200",
  city: "string|min:1|max:100",
  province: "string|optional",
  postalCode: "string|min:1|max:20",
  country: { type: "string", length: 2, pattern: /^[A-Z]{2}$/ },
};

const USER_ACTIONS: Record<string, ActionInfo> = {
  "user.register": {
    auth: "none",
    params: { $$strict: "remove", email: "email|max:254", password: "string|min:8|max:200", name: "string|min:1|max:100|trim" },
    openapi: { summary: "Create an account", tags: ["auth"], status: 201, response: AUTH_RESPONSE, errors: [409, 429] },
  },
  "user.login": {
    auth: "none",
    params: { email: "email", password: "string|min:1" },
    openapi: { summary: "Log in", tags: ["auth"], response: AUTH_RESPONSE, errors: [429] },
  },
  "user.refresh": {
    auth: "none",
    params: { refreshToken: "string" },
    openapi: {
      tags: ["auth"],
      response: { type: "object", properties: { accessToken: { type: "string" }, refreshToken: { type: "string" } } },
    },
  },
  "user.logout": { auth: "user", params: { refreshToken: "string" }, openapi: { tags: ["auth"], status: 204 } },
  "user.me": { auth: "user", openapi: { summary: "The current user", response: USER_SCHEMA } },
  "user.updateMe": {
    auth: "user",
    params: {
      $$strict: true,
      name: "string|optional|min:1|max:100",
      preferences: {
        type: "object",
        optional: true,
        props: { categories: "string[]|optional", brands: { type: "array", items: "string", optional: true, max: 50 } },
      },
    },
    openapi: { response: USER_SCHEMA },
  },
  "user.listAddresses": { auth: "user", openapi: { response: { type: "array", items: { type: "object" } } } },
  "user.createAddress": { auth: "user", params: ADDRESS_PARAMS, openapi: { status: 201 } },
  "user.updateAddress": {
    auth: "user",
    params: {
      id: "string",
      ...Object.fromEntries(
        Object.entries(ADDRESS_PARAMS).map(([k, v]) => [k, typeof v === "string" ? `${v}|optional` : { ...(v as object), optional: true }]),
      ),
    },
  },
  "user.deleteAddress": { auth: "user", params: { id: "string" }, openapi: { status: 204 } },
  "user.adminList": {
    auth: "admin",
    params: {
      page: "number|integer|min:1|optional|convert",
      pageSize: { type: "number", integer: true, min: 1, max: 100, default: 20, convert: true },
    },
  },
};

const USER_ROUTES: BuildOpenApiOptions["routes"] = [
  {
    path: "/api",
    aliases: {
      "POST /auth/register": "user.register",
      "POST /auth/login": "user.login",
      "POST /auth/refresh": "user.refresh",
      "POST /auth/logout": "user.logout",
      "GET /users/me": "user.me",
      "PATCH /users/me": "user.updateMe",
      "GET /users/me/addresses": "user.listAddresses",
      "POST /users/me/addresses": "user.createAddress",
      "PATCH /users/me/addresses/:id": "user.updateAddress",
      "DELETE /users/me/addresses/:id": "user.deleteAddress",
      "GET /users": "user.adminList",
      // Service not registered yet: still documented, generically.
      "GET /products/:id": "product.get",
      "POST /products": "product.create",
    },
  },
];

function buildUserDoc(routes = USER_ROUTES): OpenApiDocument {
  return buildOpenApiDocument({
    info: { title: "Meridian API", version: "1.0.0", description: "Test document" },
    serverUrl: "http://localhost:3000",
    routes,
    actions: USER_ACTIONS,
  });
}

it("document for the user routes is a valid OpenAPI 3.0.3 document", async () => {
  const doc = buildUserDoc();
  const result = await validateOpenApi(doc);
  assert.deepEqual(result.errors, undefined);
  assert.equal(result.valid, true);
  assert.equal(doc.openapi, "3.0.3");
  assert.deepEqual(doc.servers, [{ url: "http://localhost:3000" }]);
});

it("an invalid document is reported invalid (the check can fail)", async () => {
  const doc = buildUserDoc() as unknown as Record<string, unknown>;
  const broken = structuredClone(doc);
  delete (broken.info as Record<string, unknown>).version;
  const paths = broken.paths as Record<string, Record<string, Record<string, unknown>>>;
  const me = paths["/api/users/me"];
  if (me?.get) me.get.responses = "nope";
  const result = await validateOpenApi(broken);
  assert.equal(result.valid, false);
  assert.ok(result.errors);

  // 3.1-style nullable types are not 3.0: the validator must catch them too.
  const typeArray = structuredClone(doc);
  const schemas = (typeArray.components as { schemas: Record<string, unknown> }).schemas;
  schemas.Bad = { type: ["string", "null"] };
  assert.equal((await validateOpenApi(typeArray)).valid, false);
});

it("paths are sorted, templated and carry the expected operations", () => {
  const doc = buildUserDoc();
  assert.deepEqual(Object.keys(doc.paths), [
    "/api/auth/login",
    "/api/auth/logout",
    "/api/auth/refresh",
    "/api/auth/register",
    "/api/products",
    "/api/products/{id}",
    "/api/users",
    "/api/users/me",
    "/api/users/me/addresses",
    "/api/users/me/addresses/{id}",
  ]);
  assert.deepEqual(Object.keys(doc.paths["/api/users/me/addresses/{id}"] ?? {}), ["patch", "delete"]);
  const ids = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
  assert.equal(new Set(ids).size, ids.length, "operationIds are unique");
  assert.deepEqual(
    doc.tags?.map((t) => t.name),
    ["auth", "product", "user"],
  );
});

it("register: body, 201, documented errors, no security", () => {
  const op = operation(buildUserDoc(), "post", "/api/auth/register");
  assert.equal(op.operationId, "user.register");
  assert.equal(op.summary, "Create an account");
  assert.deepEqual(op.tags, ["auth"]);
  assert.equal(op.security, undefined);
  assert.equal(op.parameters, undefined);
  assert.deepEqual(op.requestBody, {
    required: true,
    content: {
      "application/json": {
        schema: {
          type: "object",
          properties: {
            email: { type: "string", format: "email", maxLength: 254 },
            password: { type: "string", minLength: 8, maxLength: 200 },
            name: { type: "string", minLength: 1, maxLength: 100 },
          },
          required: ["email", "password", "name"],
        },
      },
    },
  });
  assert.deepEqual(Object.keys(op.responses), ["201", "400", "409", "413", "415", "422", "429", "500"]);
  assert.deepEqual(op.responses["409"], { $ref: "#/components/responses/Conflict" });
  assert.deepEqual(op.responses["201"], { description: "Created", content: { "application/json": { schema: AUTH_RESPONSE } } });
});

it("authenticated operations: bearer security, 401, 403 for admin, query params for GET", () => {
  const doc = buildUserDoc();
  const me = operation(doc, "get", "/api/users/me");
  assert.deepEqual(me.security, [{ bearerAuth: [] }]);
  assert.deepEqual(Object.keys(me.responses), ["200", "401", "500"]);
  assert.equal(me.requestBody, undefined);

  const admin = operation(doc, "get", "/api/users");
  assert.deepEqual(Object.keys(admin.responses), ["200", "400", "401", "403", "422", "500"]);
  assert.deepEqual(admin.parameters, [
    { name: "page", in: "query", required: false, schema: { type: "integer", minimum: 1 } },
    { name: "pageSize", in: "query", required: false, schema: { type: "integer", minimum: 1, maximum: 100, default: 20 } },
  ]);
  assert.deepEqual(doc.components.securitySchemes.bearerAuth, {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description: "Access token from POST /api/auth/login, /register or /refresh.",
  });
});

it("path params: required string parameter, excluded from the body, 404 documented", () => {
  const doc = buildUserDoc();
  const patch = operation(doc, "patch", "/api/users/me/addresses/{id}");
  assert.deepEqual(patch.parameters, [{ name: "id", in: "path", required: true, schema: { type: "string" } }]);
  const body = patch.requestBody?.content["application/json"]?.schema as JsonSchema;
  assert.ok(body.properties && !("id" in body.properties));
  assert.equal(patch.requestBody?.required, false); // every address field is optional in a PATCH
  assert.ok("404" in patch.responses);

  const del = operation(doc, "delete", "/api/users/me/addresses/{id}");
  assert.deepEqual(Object.keys(del.responses), ["204", "400", "401", "404", "422", "500"]);
  assert.deepEqual(del.responses["204"], { description: "No Content" });
  assert.equal(del.requestBody, undefined);
});

it("aliases of unregistered actions are still emitted, generically", () => {
  const doc = buildUserDoc();
  const get = operation(doc, "get", "/api/products/{id}");
  assert.equal(get.operationId, "product.get");
  assert.deepEqual(get.tags, ["product"]);
  assert.match(get.description ?? "", /not registered/);
  assert.deepEqual(get.parameters, [{ name: "id", in: "path", required: true, schema: { type: "string" } }]);
  assert.deepEqual(Object.keys(get.responses), ["200", "404", "500"]);
  const create = operation(doc, "post", "/api/products");
  assert.deepEqual(create.requestBody, { required: false, content: { "application/json": { schema: { type: "object" } } } });
});

it("output is deterministic regardless of alias order", () => {
  const shuffled: BuildOpenApiOptions["routes"] = USER_ROUTES.map((route) => ({
    path: route.path,
    aliases: Object.fromEntries(Object.entries(route.aliases).reverse()),
  }));
  assert.equal(JSON.stringify(buildUserDoc(shuffled)), JSON.stringify(buildUserDoc()));
});

it("moleculer-web path syntax: optional groups, wildcards, REST shorthand, route prefix joining", async () => {
  const doc = buildOpenApiDocument({
    info: { title: "t", version: "1" },
    routes: [
      {
        path: "api/",
        aliases: {
          "GET /files{/:name}": "file.get",
          "GET /static/*path": "file.static",
          "GET /docs/:section.:ext": "file.section",
          "REST /widgets": { action: "widget", only: ["list", "get", "remove"] },
          "/anything": "file.any",
          "ALL /everything": "file.any",
          "POST /upload": "multipart:file.save",
          "get /lower": "file.lower",
        },
      },
      { path: "", aliases: { "GET /": "root.index", "POST /hook": () => undefined } },
    ],
    actions: { "file.get": { params: { name: "string|optional" } }, "widget.get": { params: { id: "number|convert|integer" } } },
  });
  assert.deepEqual(Object.keys(doc.paths), [
    "/",
    "/api/docs/{section}.{ext}",
    "/api/files",
    "/api/files/{name}",
    "/api/lower",
    "/api/static/{path}",
    "/api/upload",
    "/api/widgets",
    "/api/widgets/{id}",
    "/hook",
  ]);
  assert.equal(operation(doc, "get", "/api/files").operationId, "file.get");
  assert.equal(operation(doc, "get", "/api/files/{name}").operationId, "file.get_2");
  assert.deepEqual(operation(doc, "get", "/api/files").parameters, [
    { name: "name", in: "query", required: false, schema: { type: "string" } },
  ]);
  assert.deepEqual(operation(doc, "get", "/api/widgets/{id}").parameters, [
    { name: "id", in: "path", required: true, schema: { type: "integer" } },
  ]);
  assert.equal(operation(doc, "delete", "/api/widgets/{id}").operationId, "widget.remove");
  assert.deepEqual(Object.keys(operation(doc, "post", "/api/upload").requestBody?.content ?? {}), ["multipart/form-data"]);
  assert.equal(operation(doc, "post", "/hook").operationId, "post_hook");
  assert.deepEqual(doc["x-undocumented-aliases"], ["/anything", "ALL /everything"]);
  assert.equal((await validateOpenApi(doc)).valid, true);
});

it("a document built from exotic params still validates", async () => {
  const doc = buildOpenApiDocument({
    info: { title: "t", version: "1" },
    routes: [{ path: "/api", aliases: { "POST /x/:id": "x.do", "GET /x": "x.list" } }],
    actions: {
      "x.do": {
        auth: "optional",
        params: {
          id: "uuid",
          any: "any",
          multi: ["string", "number|nullable"],
          nested: { type: "object", props: { deep: { type: "array", items: { type: "tuple", items: ["string", "boolean"] } } } },
          rec: { type: "record", value: { type: "object", props: { a: "string" } } },
          forbidden: "forbidden",
          unknown: "frobnicate",
          date: "date|convert",
          eq: { type: "equal", value: "yes" },
          status: { type: "enum", values: ["A", null], nullable: true },
        },
        openapi: {
          response: { type: ["object", "null"], properties: { when: { type: "string", const: "now" } } } as unknown as JsonSchema,
          errors: [402, 409, 999],
        },
      },
      "x.list": { params: { filter: { type: "object", optional: true, props: { q: "string" } }, tags: "string[]|optional" } },
    },
  });
  const op = operation(doc, "post", "/api/x/{id}");
  assert.deepEqual(op.security, [{}, { bearerAuth: [] }]);
  assert.ok("402" in op.responses && !("999" in op.responses));
  const list = operation(doc, "get", "/api/x");
  assert.equal(list.parameters?.[0]?.style, "deepObject");
  const result = await validateOpenApi(doc);
  assert.deepEqual(result.errors, undefined);
  assert.equal(result.valid, true);
});

it("a registered action without `auth` is documented as admin-only (the gateway fails closed); defaultAuth overrides", () => {
  const options: BuildOpenApiOptions = {
    info: { title: "t", version: "1" },
    routes: [{ path: "", aliases: { "GET /metrics": "api.metrics", "GET /x": "x.unknown" } }],
    actions: { "api.metrics": { openapi: { contentType: "text/plain; version=0.0.4", response: { type: "string" } } } },
  };
  const metrics = operation(buildOpenApiDocument(options), "get", "/metrics");
  assert.deepEqual(metrics.security, [{ bearerAuth: [] }]);
  assert.deepEqual(Object.keys(metrics.responses), ["200", "401", "403", "500"]);
  assert.deepEqual(metrics.responses["200"], {
    description: "OK",
    content: { "text/plain; version=0.0.4": { schema: { type: "string" } } },
  });
  // Unknown action: its auth cannot be known, so none is claimed.
  assert.equal(operation(buildOpenApiDocument(options), "get", "/x").security, undefined);

  const open = operation(buildOpenApiDocument({ ...options, defaultAuth: "none" }), "get", "/metrics");
  assert.equal(open.security, undefined);
  assert.deepEqual(Object.keys(open.responses), ["200", "500"]);
});
