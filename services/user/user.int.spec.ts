/**
 * The user part of the contract through the gateway, on SQLite (embedded) and on the
 * real MariaDB + Redis (cluster storage), with brokers in this process.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "mocha";
import { http, startTestApp, type TestApp } from "../../test/support/app";

const address = {
  recipient: "Ada Lovelace",
  phone: "+44 20 7946 0018",
  line1: "12 St James's Square",
  city: "London",
  postalCode: "SW1Y 4JH",
  country: "gb",
};

function assertErrorShape(body: any, code: string) {
  assert.equal(typeof body?.error?.message, "string", JSON.stringify(body));
  assert.equal(body.error.code, code, JSON.stringify(body));
  assert.ok(Array.isArray(body.error.details));
}

for (const storage of ["sqlite", "mariadb"] as const) {
  describe(`user service over the gateway (${storage})`, () => {
    let app: TestApp;
    const call = (method: string, path: string, opts: Parameters<typeof http>[3] = {}) => http(app.baseUrl, method, path, opts);
    const register = async (email: string, password = "correct horse battery", name = "Test User") => {
      const r = await call("POST", "/api/auth/register", { body: { email, password, name } });
      assert.equal(r.status, 201, r.text);
      return r.body as { user: any; accessToken: string; refreshToken: string };
    };

    before(async () => {
      app = await startTestApp({
        db: storage,
        redis: storage === "mariadb",
        env: { ADMIN_EMAIL: "root@example.com", ADMIN_PASSWORD: "admin-password-1", LOGIN_RATE_LIMIT: "3", LOGIN_RATE_WINDOW_S: "60" },
      });
    });
    after(async () => app?.stop());

    it("register returns the user, tokens, 201 and never a hash", async () => {
      const r = await call("POST", "/api/auth/register", {
        body: { email: "  Ada@Example.COM ", password: "correct horse battery", name: "Ada" },
      });
      assert.equal(r.status, 201);
      assert.equal(r.body.user.email, "ada@example.com");
      assert.equal(r.body.user.role, "customer");
      assert.deepEqual(r.body.user.preferences, { categories: [], brands: [] });
      assert.match(r.body.user.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(r.body.accessToken && r.body.refreshToken);
      assert.doesNotMatch(r.text, /argon2|password/i);
    });

    it("taken e-mail is 409, weak password 422, bad e-mail 422, role cannot be set", async () => {
      await register("taken@example.com");
      const again = await call("POST", "/api/auth/register", {
        body: { email: "TAKEN@example.com", password: "another password", name: "X" },
      });
      assert.equal(again.status, 409);
      assertErrorShape(again.body, "CONFLICT");
      const weak = await call("POST", "/api/auth/register", { body: { email: "weak@example.com", password: "short", name: "X" } });
      assert.equal(weak.status, 422);
      assertErrorShape(weak.body, "VALIDATION_ERROR");
      const badEmail = await call("POST", "/api/auth/register", { body: { email: "not-an-email", password: "long enough pw", name: "X" } });
      assert.equal(badEmail.status, 422);
      const withRole = await call("POST", "/api/auth/register", {
        body: { email: "role@example.com", password: "long enough pw", name: "X", role: "admin" },
      });
      assert.equal(withRole.status, 422);
      assertErrorShape(withRole.body, "VALIDATION_ERROR");
    });

    it("concurrent registrations of one e-mail: exactly one succeeds", async () => {
      const results = await Promise.all(
        Array.from({ length: 8 }, () =>
          call("POST", "/api/auth/register", { body: { email: "race@example.com", password: "race password 1", name: "R" } }),
        ),
      );
      assert.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409, 409, 409]);
    });

    it("login: right password 200, wrong password and unknown e-mail give the same 401", async () => {
      await register("login@example.com", "login password 1");
      const ok = await call("POST", "/api/auth/login", { body: { email: "LOGIN@example.com", password: "login password 1" } });
      assert.equal(ok.status, 200);
      assert.equal(ok.body.user.email, "login@example.com");
      const wrong = await call("POST", "/api/auth/login", { body: { email: "login@example.com", password: "nope nope nope" } });
      const unknown = await call("POST", "/api/auth/login", { body: { email: "ghost@example.com", password: "nope nope nope" } });
      assert.equal(wrong.status, 401);
      assert.equal(unknown.status, 401);
      assert.deepEqual(wrong.body, unknown.body);
    });

    it("login rate limit: 429 with Retry-After, even for the right password", async () => {
      await register("limited@example.com", "limited password");
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++)
        statuses.push(
          (await call("POST", "/api/auth/login", { body: { email: "limited@example.com", password: "wrong password!" } })).status,
        );
      assert.deepEqual(statuses, [401, 401, 401, 429]);
      const right = await call("POST", "/api/auth/login", { body: { email: "limited@example.com", password: "limited password" } });
      assert.equal(right.status, 429);
      assertErrorShape(right.body, "RATE_LIMITED");
      const retryAfter = Number(right.headers.get("retry-after"));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    });

    it("refresh rotates; reusing an old refresh token revokes the whole family", async () => {
      const s = await register("rotate@example.com");
      const r1 = await call("POST", "/api/auth/refresh", { body: { refreshToken: s.refreshToken } });
      assert.equal(r1.status, 200);
      assert.ok(r1.body.accessToken && r1.body.refreshToken && r1.body.refreshToken !== s.refreshToken);
      // The new access token works.
      assert.equal((await call("GET", "/api/users/me", { token: r1.body.accessToken })).status, 200);
      // The old refresh token is reuse: 401, and the newest one dies with it.
      const reuse = await call("POST", "/api/auth/refresh", { body: { refreshToken: s.refreshToken } });
      assert.equal(reuse.status, 401);
      assertErrorShape(reuse.body, "UNAUTHORIZED");
      const r2 = await call("POST", "/api/auth/refresh", { body: { refreshToken: r1.body.refreshToken } });
      assert.equal(r2.status, 401);
      // Another login (another family) is unaffected.
      const other = await call("POST", "/api/auth/login", { body: { email: "rotate@example.com", password: "correct horse battery" } });
      assert.equal((await call("POST", "/api/auth/refresh", { body: { refreshToken: other.body.refreshToken } })).status, 200);
    });

    it("concurrent refreshes with one token: at most one succeeds", async () => {
      const s = await register("double@example.com");
      const results = await Promise.all(
        Array.from({ length: 5 }, () => call("POST", "/api/auth/refresh", { body: { refreshToken: s.refreshToken } })),
      );
      assert.ok(results.filter((r) => r.status === 200).length <= 1, results.map((r) => r.status).join(","));
      assert.ok(results.every((r) => r.status === 200 || r.status === 401));
    });

    it("garbage and tampered refresh tokens are 401", async () => {
      const s = await register("tamper@example.com");
      const [id] = s.refreshToken.split(".");
      for (const refreshToken of ["garbage", `${id}.${"A".repeat(43)}`, "", s.refreshToken + "x"]) {
        const r = await call("POST", "/api/auth/refresh", { body: { refreshToken } });
        assert.ok(r.status === 401 || r.status === 422, `${refreshToken}: ${r.status}`);
      }
      // The tampered attempt did not burn the real token.
      assert.equal((await call("POST", "/api/auth/refresh", { body: { refreshToken: s.refreshToken } })).status, 200);
    });

    it("logout revokes the refresh token (204); someone else's token is left alone", async () => {
      const a = await register("logout-a@example.com");
      const b = await register("logout-b@example.com");
      const cross = await call("POST", "/api/auth/logout", { token: a.accessToken, body: { refreshToken: b.refreshToken } });
      assert.equal(cross.status, 204);
      assert.equal((await call("POST", "/api/auth/refresh", { body: { refreshToken: b.refreshToken } })).status, 200);
      const out = await call("POST", "/api/auth/logout", { token: a.accessToken, body: { refreshToken: a.refreshToken } });
      assert.equal(out.status, 204);
      assert.equal(out.text, "");
      assert.equal((await call("POST", "/api/auth/refresh", { body: { refreshToken: a.refreshToken } })).status, 401);
      assert.equal((await call("POST", "/api/auth/logout", { body: { refreshToken: a.refreshToken } })).status, 401);
    });

    it("GET/PATCH /users/me: name and preferences; role and e-mail cannot be changed", async () => {
      const s = await register("me@example.com");
      const me = await call("GET", "/api/users/me", { token: s.accessToken });
      assert.equal(me.status, 200);
      assert.equal(me.body.id, s.user.id);
      const patched = await call("PATCH", "/api/users/me", {
        token: s.accessToken,
        body: { name: "  New Name ", preferences: { categories: ["Phones", "phones", " Laptops "], brands: ["Acme"] } },
      });
      assert.equal(patched.status, 200, patched.text);
      assert.equal(patched.body.name, "New Name");
      assert.deepEqual(patched.body.preferences, { categories: ["Phones", "Laptops"], brands: ["Acme"] });
      // Read your writes: the account is read through the cacher, cleaned at the change's commit.
      const reread = await call("GET", "/api/users/me", { token: s.accessToken });
      assert.equal(reread.body.name, "New Name");
      assert.deepEqual(reread.body.preferences, { categories: ["Phones", "Laptops"], brands: ["Acme"] });
      const brandsOnly = await call("PATCH", "/api/users/me", { token: s.accessToken, body: { preferences: { brands: [] } } });
      assert.deepEqual(brandsOnly.body.preferences, { categories: ["Phones", "Laptops"], brands: [] });
      assert.deepEqual(((await app.broker.call("user.get", { id: s.user.id })) as any).preferences, {
        categories: ["Phones", "Laptops"],
        brands: [],
      });
      for (const body of [
        { role: "admin" },
        { email: "x@example.com" },
        { preferences: { colour: ["red"] } },
        { name: "" },
        { name: 42 },
      ]) {
        const r = await call("PATCH", "/api/users/me", { token: s.accessToken, body });
        assert.equal(r.status, 422, JSON.stringify(body));
        assertErrorShape(r.body, "VALIDATION_ERROR");
      }
      assert.equal((await call("GET", "/api/users/me", { token: s.accessToken })).body.role, "customer");
    });

    it("no token, a bad token, or an expired/forged token: 401", async () => {
      assert.equal((await call("GET", "/api/users/me")).status, 401);
      const bad = await call("GET", "/api/users/me", { token: "a.b.c" });
      assert.equal(bad.status, 401);
      assertErrorShape(bad.body, "UNAUTHORIZED");
      // alg "none" forgery with a valid-looking payload
      const enc = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
      const none = `${enc({ alg: "none", typ: "JWT" })}.${enc({ sub: "x", role: "admin", iss: "meridian", aud: "meridian-api" })}.sig`;
      assert.equal((await call("GET", "/api/users/me", { token: none })).status, 401);
      assert.equal((await call("GET", "/api/users/me", { headers: { authorization: "Basic Zm9vOmJhcg==" } })).status, 401);
    });

    it("addresses CRUD, ownership (someone else's is 404), allow-listed fields", async () => {
      const a = await register("addr-a@example.com");
      const b = await register("addr-b@example.com");
      const created = await call("POST", "/api/users/me/addresses", { token: a.accessToken, body: address });
      assert.equal(created.status, 201, created.text);
      assert.equal(created.body.country, "GB");
      assert.equal(created.body.line2, null);
      const id = created.body.id;
      const list = await call("GET", "/api/users/me/addresses", { token: a.accessToken });
      assert.deepEqual(
        list.body.map((x: any) => x.id),
        [id],
      );
      assert.deepEqual((await call("GET", "/api/users/me/addresses", { token: b.accessToken })).body, []);

      const patched = await call("PATCH", `/api/users/me/addresses/${id}`, {
        token: a.accessToken,
        body: { city: "Cambridge", line2: "Flat 1" },
      });
      assert.equal(patched.status, 200, patched.text);
      assert.equal(patched.body.city, "Cambridge");
      assert.equal(patched.body.recipient, address.recipient);

      // B cannot see, change or delete A's address: 404, as if it did not exist.
      const steal = await call("PATCH", `/api/users/me/addresses/${id}`, { token: b.accessToken, body: { city: "Elsewhere" } });
      assert.equal(steal.status, 404);
      assertErrorShape(steal.body, "NOT_FOUND");
      assert.equal((await call("DELETE", `/api/users/me/addresses/${id}`, { token: b.accessToken })).status, 404);
      assert.equal((await call("DELETE", `/api/users/me/addresses/nonexistent`, { token: a.accessToken })).status, 404);
      // user_id in the body is not a field: 422, never a transfer of ownership.
      const inject = await call("PATCH", `/api/users/me/addresses/${id}`, { token: a.accessToken, body: { userId: b.user.id } });
      assert.equal(inject.status, 422);

      const missing = await call("POST", "/api/users/me/addresses", { token: a.accessToken, body: { ...address, postalCode: undefined } });
      assert.equal(missing.status, 422);
      const badCountry = await call("POST", "/api/users/me/addresses", { token: a.accessToken, body: { ...address, country: "GBR" } });
      assert.equal(badCountry.status, 422);

      assert.equal((await call("DELETE", `/api/users/me/addresses/${id}`, { token: a.accessToken })).status, 204);
      assert.deepEqual((await call("GET", "/api/users/me/addresses", { token: a.accessToken })).body, []);
    });

    it("admin is bootstrapped from ADMIN_EMAIL/ADMIN_PASSWORD, once", async () => {
      const r = await call("POST", "/api/auth/login", { body: { email: "root@example.com", password: "admin-password-1" } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.user.role, "admin");
      // Running the bootstrap again (a second replica starting) changes nothing.
      await (app.broker.getLocalService("user") as any).bootstrapAdmin();
      const again = await call("POST", "/api/auth/login", { body: { email: "root@example.com", password: "admin-password-1" } });
      assert.equal(again.body.user.id, r.body.user.id);
    });

    it("successful logins never count; failures across many accounts from one address do", async () => {
      await register("many-logins@example.com", "many logins pw");
      for (let i = 0; i < 40; i++) {
        const ok = await call("POST", "/api/auth/login", { body: { email: "many-logins@example.com", password: "many logins pw" } });
        assert.equal(ok.status, 200, `success #${i + 1}: ${ok.text}`);
      }
      // LOGIN_RATE_LIMIT=3 here, so the per-address budget is 30 failures (earlier tests spent
      // some). Last in this suite: it leaves 127.0.0.1 blocked.
      const statuses: number[] = [];
      for (let i = 0; i < 31; i++)
        statuses.push(
          (await call("POST", "/api/auth/login", { body: { email: `spray-${i}@example.com`, password: "wrong wrong" } })).status,
        );
      assert.equal(statuses.at(-1), 429, statuses.join(","));
      assert.ok(
        statuses.slice(0, 20).every((st) => st === 401),
        statuses.join(","),
      );
    });
  });
}
