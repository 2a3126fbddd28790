/**
 * User service: accounts, credentials, tokens, profile and addresses.
 * Handlers stay thin: rules live in user.domain.ts, SQL in user.repo.ts.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import path from "node:path";
import argon2 from "argon2";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";
import { accessTokens, type AccessTokens } from "../../lib/auth/tokens";
import type { AppConfig } from "../../lib/config";
import { requireUser, type RequestContext } from "../../lib/context";
import { inTransaction, isUniqueViolation, type Db } from "../../lib/db";
import { AppError, conflict, notFound, unauthorized, validationError } from "../../lib/errors";
import { createRateLimitStore, type RateLimitStore } from "../../lib/rate-limit";
import { createRevocations, type Revocations } from "../../lib/auth/revocations";
import { createLoginThrottle, type LoginThrottle } from "./login-throttle";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin, type EventsServiceThis } from "../../mixins/events.mixin";
import {
  ADDRESS_MAX_PER_USER,
  EMPTY_PREFERENCES,
  mergePreferences,
  normalizeEmail,
  parseRefreshToken,
  passwordProblems,
  pickAddressFields,
  refreshVerdict,
  toPublicUser,
  type Role,
  type UserRecord,
  type Address,
} from "./user.domain";
import * as repo from "./user.repo";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";

/** argon2id with OWASP's minimum (DESIGN.md): 19 MiB, 2 passes, 1 lane. */
const ARGON2_OPTIONS = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

interface UserServiceThis extends EventsServiceThis {
  db: Db;
  tokens: AccessTokens;
  limitStore: RateLimitStore;
  loginThrottle: LoginThrottle;
  revocations: Revocations;
  dummyHash: string;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void };
  issueSession(user: UserRecord, familyId?: string): Promise<{ accessToken: string; refreshToken: string }>;
  addressOf(userId: string, id: string): Promise<Address>;
  bootstrapAdmin(): Promise<void>;
}

type Ctx<P = Record<string, unknown>> = RequestContext<P>;

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");


/**
 * Sets an account's role and records the change where the gateway looks (so it applies to
 * tokens already issued). The store is written after the row: if it fails, the caller sees
 * the error and may retry; the row already says the new role, which tokens issued from now
 * on carry. Shared by the admin route and `npm run admin`.
 */
export async function changeRole(db: Db, revocations: Revocations, userId: string, role: Role): Promise<UserRecord | undefined> {
  if (!(await repo.setRole(db, userId, role, Date.now()))) return undefined;
  await revocations.setRole(userId, role);
  return repo.findUserById(db, userId);
}

export function createUserService(config: AppConfig): TypedServiceSchema<UserServiceThis> {
  return {
    name: "user",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [EventsMixin({ name: "user", config }), DbMixin({ name: "user", migrationsDir: path.join(__dirname, "migrations"), config })],

    actions: {
      register: {
        auth: "none",
        rateLimit: "signup",
        params: Params["user.register"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.register">>): Promise<ActionResponse<"user.register">> {
          const email = normalizeEmail(ctx.params.email);
          const problems = passwordProblems(ctx.params.password, email);
          if (problems.length)
            throw validationError("Password is too weak", problems.map((message) => ({ field: "password", message })));
          const passwordHash = await argon2.hash(ctx.params.password, ARGON2_OPTIONS);
          const now = Date.now();
          let user: UserRecord;
          try {
            // The account and its `user.registered` event commit together (outbox, lib/events).
            user = await inTransaction(this.db, async (trx) => {
              const created = await repo.insertUser(trx, {
                id: randomUUID(), email, name: ctx.params.name, passwordHash, role: "customer", preferences: EMPTY_PREFERENCES, now,
              });
              await this.publishEvent(trx, Events.UserRegistered, {
                userId: created.id, email: created.email, name: created.name, occurredAt: new Date(now).toISOString(),
              });
              return created;
            });
          } catch (err) {
            if (isUniqueViolation(err)) throw conflict("This e-mail address is already registered", [{ field: "email" }]);
            throw err;
          }
          ctx.meta.$statusCode = 201;
          ctx.meta.$location = "/api/users/me";
          return { user: toPublicUser(user), ...(await this.issueSession(user)) };
        },
      },

      login: {
        auth: "none",
        params: Params["user.login"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.login">>): Promise<ActionResponse<"user.login">> {
          const email = normalizeEmail(ctx.params.email);
          // The attempt is counted before the password is checked (login-throttle.ts).
          const attempt = await this.loginThrottle.begin(email, ctx.meta.clientIp ?? "unknown");
          const found = await repo.findCredentialsByEmail(this.db, email);
          // Verify against a dummy hash when the account does not exist, so the answer
          // takes as long either way and the e-mail's existence does not leak.
          const ok = await argon2.verify(found?.passwordHash ?? this.dummyHash, ctx.params.password).catch(() => false);
          if (!found || !ok) throw unauthorized("Invalid e-mail or password");
          await this.loginThrottle.succeeded(attempt);
          return { user: toPublicUser(found.user), ...(await this.issueSession(found.user)) };
        },
      },

      refresh: {
        auth: "none",
        params: Params["user.refresh"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.refresh">>): Promise<ActionResponse<"user.refresh">> {
          const invalid = () => unauthorized("Invalid or expired refresh token");
          const parsed = parseRefreshToken(ctx.params.refreshToken);
          if (!parsed) throw invalid();
          const now = Date.now();
          const outcome = await inTransaction(this.db, async (trx) => {
            const row = await repo.findRefreshToken(trx, parsed.id);
            if (!row || !timingSafeEqual(Buffer.from(row.secretHash), Buffer.from(sha256(parsed.secret)))) return { kind: "invalid" as const };
            const verdict = refreshVerdict(row, now);
            if (verdict === "reused") return { kind: "reused" as const, familyId: row.familyId };
            if (verdict !== "valid") return { kind: "invalid" as const };
            // Lost race with a concurrent refresh of the same token: that is reuse too.
            if (!(await repo.claimRefreshToken(trx, row.id, now))) return { kind: "reused" as const, familyId: row.familyId };
            const user = await repo.findUserById(trx, row.userId);
            if (!user) return { kind: "invalid" as const };
            return { kind: "ok" as const, user, familyId: row.familyId };
          });
          if (outcome.kind === "reused") {
            // Committed on its own: the revocation must stick although the request fails. The
            // family's access tokens are denied too (the thief may hold one).
            await repo.revokeFamily(this.db, outcome.familyId, now);
            await this.revocations.revokeSession(outcome.familyId);
            this.logger.warn("Refresh token reuse detected; token family revoked", { familyId: outcome.familyId });
            throw unauthorized("Refresh token was already used; all sessions of this login are revoked");
          }
          if (outcome.kind !== "ok") throw invalid();
          return this.issueSession(outcome.user, outcome.familyId);
        },
      },

      logout: {
        auth: "user",
        params: Params["user.logout"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.logout">>): Promise<ActionResponse<"user.logout">> {
          const me = requireUser(ctx);
          const parsed = parseRefreshToken(ctx.params.refreshToken);
          const row = parsed && (await repo.findRefreshToken(this.db, parsed.id));
          // Someone else's or an unknown token: answer the same, change nothing.
          if (row && row.userId === me.id && timingSafeEqual(Buffer.from(row.secretHash), Buffer.from(sha256(parsed!.secret)))) {
            await repo.revokeFamily(this.db, row.familyId, Date.now());
            // The login's access tokens stop working now, not when they expire.
            await this.revocations.revokeSession(row.familyId);
          }
          ctx.meta.$statusCode = 204;
          return null;
        },
      },

      me: {
        auth: "user",
        params: Params["user.me"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.me">>): Promise<ActionResponse<"user.me">> {
          const user = await repo.findUserById(this.db, requireUser(ctx).id);
          if (!user) throw notFound("User");
          return toPublicUser(user);
        },
      },

      updateMe: {
        auth: "user",
        params: Params["user.updateMe"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.updateMe">>): Promise<ActionResponse<"user.updateMe">> {
          const me = requireUser(ctx);
          const updated = await inTransaction(this.db, async (trx) => {
            const user = await repo.findUserById(trx, me.id);
            if (!user) throw notFound("User");
            const preferences = ctx.params.preferences ? mergePreferences(user.preferences, ctx.params.preferences) : undefined;
            const now = Date.now();
            await repo.updateProfile(trx, me.id, { name: ctx.params.name, preferences }, now);
            return { ...user, name: ctx.params.name ?? user.name, preferences: preferences ?? user.preferences, updatedAt: now };
          });
          return toPublicUser(updated);
        },
      },

      listAddresses: {
        auth: "user",
        params: Params["user.listAddresses"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.listAddresses">>): Promise<ActionResponse<"user.listAddresses">> {
          return repo.listAddresses(this.db, requireUser(ctx).id);
        },
      },

      createAddress: {
        auth: "user",
        params: Params["user.createAddress"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.createAddress">>): Promise<ActionResponse<"user.createAddress">> {
          const me = requireUser(ctx);
          const id = randomUUID();
          await inTransaction(this.db, async (trx) => {
            if ((await repo.countAddresses(trx, me.id)) >= ADDRESS_MAX_PER_USER)
              throw validationError(`At most ${ADDRESS_MAX_PER_USER} addresses per account`);
            await repo.insertAddress(trx, me.id, id, pickAddressFields(ctx.params), Date.now());
          });
          ctx.meta.$statusCode = 201;
          ctx.meta.$location = `/api/users/me/addresses/${id}`;
          return this.addressOf(me.id, id);
        },
      },

      updateAddress: {
        auth: "user",
        params: Params["user.updateAddress"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.updateAddress">>): Promise<ActionResponse<"user.updateAddress">> {
          const me = requireUser(ctx);
          const { id, ...rest } = ctx.params;
          const changes = pickAddressFields(rest);
          if (!(await repo.updateAddress(this.db, me.id, id, changes, Date.now()))) throw notFound("Address");
          return this.addressOf(me.id, id);
        },
      },

      deleteAddress: {
        auth: "user",
        params: Params["user.deleteAddress"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.deleteAddress">>): Promise<ActionResponse<"user.deleteAddress">> {
          if (!(await repo.deleteAddress(this.db, requireUser(ctx).id, ctx.params.id))) throw notFound("Address");
          ctx.meta.$statusCode = 204;
          return null;
        },
      },

      /** Admins: find accounts (by e-mail prefix, role), newest first. */
      adminList: {
        auth: "admin",
        params: Params["user.adminList"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.adminList">>): Promise<ActionResponse<"user.adminList">> {
          const page = ctx.params.page ?? 1;
          const pageSize = ctx.params.pageSize ?? 20;
          const { items, total } = await repo.listUsers(this.db, {
            emailPrefix: ctx.params.email ? ctx.params.email.trim().toLowerCase() : undefined, role: ctx.params.role, limit: pageSize, offset: (page - 1) * pageSize,
          });
          return { items: items.map(toPublicUser), total, page, pageSize };
        },
      },

      /**
       * Admins: make an account admin or customer. It takes effect on the account's next
       * request (the gateway reads the changed role from the revocation store), not when its
       * access tokens expire. An admin cannot change their own role (no shop locks itself out
       * by a slip); another admin, or `npm run admin -- promote`, can.
       */
      setRole: {
        auth: "admin",
        params: Params["user.setRole"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.setRole">>): Promise<ActionResponse<"user.setRole">> {
          if (ctx.params.id === requireUser(ctx).id) throw conflict("An admin cannot change their own role", [{ field: "id" }]);
          const user = await changeRole(this.db, this.revocations, ctx.params.id, ctx.params.role);
          if (!user) throw notFound("User");
          this.logger.info(`Role of user ${user.id} set to ${user.role} by admin ${requireUser(ctx).id}`);
          return toPublicUser(user);
        },
      },

      /** For other services (order: shipping address; notification: e-mail). Not routed. */
      getAddress: {
        visibility: "public",
        params: Params["user.getAddress"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.getAddress">>): Promise<ActionResponse<"user.getAddress">> {
          const address = await repo.findAddress(this.db, ctx.params.userId, ctx.params.id);
          if (!address) throw notFound("Address");
          return address;
        },
      },

      get: {
        visibility: "public",
        params: Params["user.get"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.get">>): Promise<ActionResponse<"user.get">> {
          const user = await repo.findUserById(this.db, ctx.params.id);
          if (!user) throw notFound("User");
          return toPublicUser(user);
        },
      },
    },

    methods: {
      /** A user's address just written by this request: gone again only if deleted concurrently (404). */
      async addressOf(this: UserServiceThis, userId: string, id: string): Promise<Address> {
        const found = await repo.findAddress(this.db, userId, id);
        if (!found) throw notFound("Address");
        return found;
      },

      async issueSession(this: UserServiceThis, user: UserRecord, familyId?: string) {
        const id = randomUUID();
        const secret = randomBytes(32).toString("base64url");
        const now = Date.now();
        const sessionId = familyId ?? randomUUID();
        await repo.insertRefreshToken(this.db, {
          id,
          familyId: sessionId,
          userId: user.id,
          secretHash: sha256(secret),
          expiresAt: now + config.refreshTokenTtlS * 1000,
          now,
        });
        // The role as it is now (not as read before the password check): a role change racing
        // this login is then either in the token or, being later, applied by the gateway.
        const role = (await repo.findUserById(this.db, user.id))?.role ?? user.role;
        // The access token names its login (`sid` = the refresh family), so ending the login ends it too.
        return { accessToken: await this.tokens.sign({ id: user.id, role, sessionId }), refreshToken: `${id}.${secret}` };
      },

      /**
       * The first admin from ADMIN_EMAIL/ADMIN_PASSWORD, created when no account has that
       * address. Configuration never promotes an existing account: whoever registered the
       * address first would become admin. Such a start is refused, naming the way out (an
       * operator's explicit `npm run admin -- promote`). An existing admin is left as it is
       * (ADMIN_PASSWORD is not applied to it). Safe with several replicas starting at once:
       * the unique e-mail decides, and the loser looks again.
       */
      async bootstrapAdmin(this: UserServiceThis) {
        if (!config.admin) return;
        const email = normalizeEmail(config.admin.email);
        const refuse = () =>
          new Error(
            `ADMIN_EMAIL=${email} is the address of an existing account that is not an admin, and configuration does not promote accounts ` +
              `(whoever registered that address would become admin). If that account is yours, promote it explicitly: npm run admin -- promote ${email} ` +
              "(same environment as the nodes); otherwise set ADMIN_EMAIL to an address no one has registered.",
          );
        const existing = await repo.findCredentialsByEmail(this.db, email);
        if (existing) {
          if (existing.user.role !== "admin") throw refuse();
          return;
        }
        const problems = passwordProblems(config.admin.password, email);
        if (problems.length) throw new AppError("VALIDATION_ERROR", `ADMIN_PASSWORD: ${problems.join(", ")}`);
        try {
          await repo.insertUser(this.db, {
            id: randomUUID(), email, name: "Administrator", role: "admin", preferences: EMPTY_PREFERENCES, now: Date.now(),
            passwordHash: await argon2.hash(config.admin.password, ARGON2_OPTIONS),
          });
          this.logger.info(`Admin account ${email} created`);
        } catch (err) {
          if (!isUniqueViolation(err)) throw err;
          // Another replica created it, or someone registered the address meanwhile.
          if ((await repo.findCredentialsByEmail(this.db, email))?.user.role !== "admin") throw refuse();
        }
      },
    },

    created(this: UserServiceThis) {
      this.tokens = accessTokens(config.jwtSecret, config.accessTokenTtlS);
      this.limitStore = createRateLimitStore(config);
      this.loginThrottle = createLoginThrottle(this.limitStore, config.loginRateLimit);
      this.revocations = createRevocations(config);
    },

    async started(this: UserServiceThis) {
      this.dummyHash = await argon2.hash(randomBytes(16).toString("hex"), ARGON2_OPTIONS);
      await this.bootstrapAdmin();
      await repo.deleteExpiredRefreshTokens(this.db, Date.now());
    },

    async stopped(this: UserServiceThis) {
      await Promise.all([this.limitStore.close(), this.revocations.close()]);
    },
  };
}
