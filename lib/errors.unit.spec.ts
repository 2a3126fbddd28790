import assert from "node:assert/strict";
import { it } from "mocha";
import { Errors } from "moleculer";
import { schemaProblem } from "../test/support/schema-check";
import { AppError, DependencyErrorsMiddleware, conflict, rateLimited, toErrorResponse, validationError } from "./errors";
import { ERROR_SCHEMA } from "./openapi";

it("our errors keep their code, status and details", () => {
  assert.deepEqual(toErrorResponse(conflict("taken", [{ field: "email" }])), {
    status: 409,
    body: { error: { code: "CONFLICT", message: "taken", details: [{ field: "email" }] } },
  });
  const limited = toErrorResponse(rateLimited({ name: "signup", limit: 10, resetSeconds: 42, retryAfterSeconds: 42 }));
  assert.equal(limited.status, 429);
  assert.equal(limited.retryAfter, 42);
  assert.deepEqual(limited.headers, { "RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "42" });
  // Over the wire the details survive (a 429 from a remote user node keeps its headers).
  assert.equal(
    toErrorResponse(
      JSON.parse(
        JSON.stringify({ ...rateLimited({ name: "login", limit: 5, resetSeconds: 7 }), name: "MoleculerClientError", message: "x" }),
      ),
    ).headers?.["RateLimit-Reset"],
    "7",
  );
  assert.equal(toErrorResponse(new AppError("SERVICE_UNAVAILABLE", "down")).status, 503);
});

it("an error that crossed nodes (plain object with type/code/data) keeps its meaning", () => {
  const remote = { name: "MoleculerClientError", message: "User not found", code: 404, type: "NOT_FOUND", data: [] };
  assert.deepEqual(toErrorResponse(remote).body.error.code, "NOT_FOUND");
});

it("validator errors become VALIDATION_ERROR 422 with field details only", () => {
  const err = new Errors.ValidationError("Parameters validation error!", "VALIDATION_ERROR", [
    { type: "required", field: "email", message: "The 'email' field is required.", actual: undefined, nodeID: "x" },
  ]);
  assert.deepEqual(toErrorResponse(err), {
    status: 422,
    body: {
      error: {
        code: "VALIDATION_ERROR",
        message: "Request parameters are invalid",
        details: [{ field: "email", message: "The 'email' field is required.", type: "required" }],
      },
    },
  });
});

it("unknown errors are INTERNAL with a generic message: nothing internal leaks", () => {
  const r = toErrorResponse(new Error("ER_ACCESS_DENIED for user root at /srv/app/db.ts:12"));
  assert.deepEqual(r, { status: 500, body: { error: { code: "INTERNAL", message: "Internal server error", details: [] } } });
  assert.equal(toErrorResponse(undefined).status, 500);
  assert.equal(toErrorResponse(new Errors.MoleculerServerError("boom", 500, "X")).body.error.message, "Internal server error");
});

it("timeouts and missing services are 503, not 500", () => {
  assert.equal(toErrorResponse(new Errors.RequestTimeoutError({ action: "user.me", nodeID: "n" })).status, 503);
  assert.equal(toErrorResponse(new Errors.ServiceNotFoundError({ action: "user.me" })).status, 503);
  assert.equal(toErrorResponse(new Errors.ServiceNotAvailableError({ action: "user.me" })).status, 503);
  assert.equal(
    toErrorResponse(new Errors.RequestRejectedError({ action: "order.create", nodeID: "order-2" })).status,
    503,
    "its node left mid-request",
  );
  const webUnavailable = Object.assign(new Error("Service unavailable"), { name: "ServiceUnavailableError", code: 503 });
  assert.equal(toErrorResponse(webUnavailable).body.error.code, "SERVICE_UNAVAILABLE");
});

it("a dependency that is away (database, RabbitMQ) is 503 with Retry-After, and says nothing of it", () => {
  const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:3306"), { code: "ECONNREFUSED", errno: -111 });
  const r = toErrorResponse(refused);
  assert.equal(r.status, 503);
  assert.equal(r.retryAfter, 1);
  assert.ok(!JSON.stringify(r.body).includes("3306"), "no address leaves the server");
  assert.equal(
    toErrorResponse(Object.assign(new Error("The broker's transporter has disconnected"), { name: "BrokerDisconnectedError", code: 502 }))
      .status,
    503,
  );
  assert.equal(toErrorResponse(Object.assign(new Error("pool"), { name: "KnexTimeoutError" })).status, 503);
  assert.equal(toErrorResponse(Object.assign(new Error("lost"), { code: "PROTOCOL_CONNECTION_LOST" })).status, 503);
  assert.equal(toErrorResponse(Object.assign(new Error("closed"), { fatal: true })).status, 503, "mysql2: a command on a dead connection");
  assert.equal(toErrorResponse(Object.assign(new Error("bug"), { code: "ERR_SOMETHING" })).status, 500, "anything else is still a 500");
});

it("DependencyErrorsMiddleware turns a dependency failure into SERVICE_UNAVAILABLE where it happens, and leaves others alone", async () => {
  const fail = (err: Error) => DependencyErrorsMiddleware.localAction(() => Promise.reject(err))({});
  await assert.rejects(
    fail(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:3306"), { code: "ECONNREFUSED" })),
    (e: AppError) => e.type === "SERVICE_UNAVAILABLE" && e.code === 503 && !e.message.includes("3306"),
  );
  const other = new AppError("CONFLICT", "no");
  await assert.rejects(fail(other), (e) => e === other);
});

it("the error bodies the services send fit the Error schema derived from common.v1.ErrorResponse", () => {
  const bodies = [
    toErrorResponse(conflict("taken", [{ field: "email" }])),
    toErrorResponse(rateLimited({ name: "signup", limit: 10, resetSeconds: 42, retryAfterSeconds: 42 })),
    toErrorResponse(
      new Errors.ValidationError("x", "VALIDATION_ERROR", [{ type: "stringMin", field: "name", message: "too short", actual: "" }]),
    ),
    toErrorResponse(new AppError("OUT_OF_STOCK", "Not enough stock", [{ productId: "p1", requested: 3, available: 1 }])),
    toErrorResponse(validationError("Refund refused", [{ field: "amount", refundable: 1200 }])),
    toErrorResponse(new AppError("UNPAID_LIMIT", "At most 3", [{ limit: "MAX_UNPAID_ORDERS", max: 3, unpaidOrders: 3 }])),
    toErrorResponse(new Error("boom")),
  ].map((r) => r.body);
  for (const b of bodies) assert.equal(schemaProblem(ERROR_SCHEMA, b), null, JSON.stringify(b));
  // negative controls: a known key of the wrong type, a code outside the catalog, a missing message
  assert.match(
    String(schemaProblem(ERROR_SCHEMA, { error: { code: "OUT_OF_STOCK", message: "m", details: [{ available: "1" }] } })),
    /available: not an integer/,
  );
  assert.match(String(schemaProblem(ERROR_SCHEMA, { error: { code: "TEAPOT", message: "m", details: [] } })), /not one of/);
  assert.match(String(schemaProblem(ERROR_SCHEMA, { error: { code: "CONFLICT", details: [] } })), /message: missing/);
});
