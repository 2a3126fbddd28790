/**
 * User service: accounts, credentials, tokens, profile and addresses.
 * Handlers stay thin: rules live in user.domain.ts, SQL in user.repo.ts. This file binds the
 * actions and holds accounts (register, profile, roles, the first admin); sessions.actions.ts
 * logs in and out, addresses.actions.ts keeps the addresses.
 */
import { forRunner } from "../../lib/runner";
import { randomBytes, randomUUID } from "node:crypto";
import path from "node:path";
import argon2 from "argon2";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import { Events } from "../../proto/gen/contracts";
import type { Context, ServiceBroker } from "moleculer";
import { accessTokens } from "../../lib/auth/tokens";
import { actionCacheKey, CacheCleaner, readThrough } from "../../lib/cache-clean";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import { inTransaction, isUniqueViolation, type Db } from "../../lib/db";
import { AppError, conflict, notFound, validationError } from "../../lib/errors";
import { createRateLimitStore } from "../../lib/rate-limit";
import { createRevocations, type Revocations } from "../../lib/auth/revocations";
import { createLoginThrottle } from "./login-throttle";
import { DbMixin } from "../../mixins/db.mixin";
import { EventsMixin } from "../../mixins/events.mixin";
import {
  emptyPreferences,
  mergePreferences,
  normalizeEmail,
  passwordProblems,
  toPublicUser,
  type Role,
  type UserRecord,
} from "./user.domain";
import * as repo from "./user.repo";
import { ARGON2_OPTIONS, type Ctx, type UserServiceThis } from "./user.this";
import { sessionActions, sessionMethods } from "./sessions.actions";
import { addressActions, addressMethods } from "./addresses.actions";
import type { TypedServiceSchema } from "../../lib/service-schema";
import { Params } from "../../proto/gen/params";

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

/** How long an account's cached row may be shown after a change no node cleaned (see publicUser). */
const USER_CACHE_TTL_S = 60;

/** An account's entry in the cacher (the key `user.get` would have with keys ["id"]). */
function userKey(cacher: NonNullable<ServiceBroker["cacher"]>, id: string): string {
  return actionCacheKey(cacher, "user.get", ["id"], { id });
}

export function createUserService(config: AppConfig): TypedServiceSchema<UserServiceThis> {
  return {
    name: "user",
    // EventsMixin before DbMixin: Moleculer starts the last mixin first, and events need the migrated db.
    mixins: [EventsMixin({ name: "user", config }), DbMixin({ name: "user", migrationsDir: path.join(__dirname, "migrations"), config })],

    actions: {
      ...sessionActions(),
      ...addressActions(),

      register: {
        auth: "none",
        rateLimit: "signup",
        params: Params["user.register"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.register">>): Promise<ActionResponse<"user.register">> {
          const email = normalizeEmail(ctx.params.email);
          const problems = passwordProblems(ctx.params.password, email);
          if (problems.length)
            throw validationError(
              "Password is too weak",
              problems.map((message) => ({ field: "password", message })),
            );
          const passwordHash = await argon2.hash(ctx.params.password, ARGON2_OPTIONS);
          const now = Date.now();
          let user: UserRecord;
          try {
            // The account and its `user.registered` event commit together (outbox, lib/events).
            user = await inTransaction(this.db, async (trx) => {
              const created = await repo.insertUser(trx, {
                id: randomUUID(),
                email,
                name: ctx.params.name,
                passwordHash,
                role: "customer",
                preferences: emptyPreferences(),
                now,
              });
              await this.publishEvent(trx, Events.UserRegistered, {
                userId: created.id,
                email: created.email,
                name: created.name,
                occurredAt: new Date(now).toISOString(),
              });
              return created;
            });
          } catch (err) {
            if (isUniqueViolation(err)) throw conflict("This e-mail address is already registered", [{ field: "email", type: "unique" }]);
            throw err;
          }
          ctx.meta.$statusCode = 201;
          ctx.meta.$location = "/api/users/me";
          const session = await this.issueSession(user);
          return { user: toPublicUser(session.user), ...session.tokens };
        },
      },

      me: {
        auth: "user",
        params: Params["user.me"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.me">>): Promise<ActionResponse<"user.me">> {
          const user = await this.publicUser(requireUser(ctx).id);
          if (!user) throw notFound("User");
          return user;
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
          await this.userCache.afterCommit({ id: me.id });
          return toPublicUser(updated);
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
            emailPrefix: ctx.params.email ? ctx.params.email.trim().toLowerCase() : undefined,
            role: ctx.params.role,
            limit: pageSize,
            offset: (page - 1) * pageSize,
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
          // Cleaned whatever happens after the row's change (the revocation store may fail after it).
          const user = await changeRole(this.db, this.revocations, ctx.params.id, ctx.params.role).finally(() =>
            this.userCache.afterCommit({ id: ctx.params.id }),
          );
          if (!user) throw notFound("User");
          this.logger.info(`Role of user ${user.id} set to ${user.role} by admin ${requireUser(ctx).id}`);
          return toPublicUser(user);
        },
      },

      get: {
        visibility: "public",
        params: Params["user.get"],
        async handler(this: UserServiceThis, ctx: Ctx<ActionParams<"user.get">>): Promise<ActionResponse<"user.get">> {
          const user = await this.publicUser(ctx.params.id);
          if (!user) throw notFound("User");
          return user;
        },
      },
    },

    events: {
      /** Another node's cache hint (lib/cache-clean.ts). */
      "cache.clean.user": {
        async handler(this: UserServiceThis, ctx: Context<{ id?: unknown }>) {
          if (typeof ctx.params?.id === "string") await this.userCache.received(ctx.nodeID ?? "", { id: ctx.params.id });
        },
      },
    },

    methods: {
      ...sessionMethods(config),
      ...addressMethods,

      /**
       * An account as shown, read through the cacher (#16: the row's read was half of
       * `GET /api/users/me`, and the recommendations ask for it on every answer). Every change
       * to the row cleans it after its commit (updateMe, setRole: lib/cache-clean.ts), so
       * the next read on any node sees the change; `npm run admin -- promote` (another process)
       * cleans nothing: its role shows here within USER_CACHE_TTL_S (the gateway enforces the
       * new role at once, from the revocation store).
       */
      async publicUser(this: UserServiceThis, id: string) {
        const cacher = this.broker.cacher;
        return readThrough(cacher, cacher ? userKey(cacher, id) : "", USER_CACHE_TTL_S, async () => {
          const user = await repo.findUserById(this.db, id);
          return user && toPublicUser(user);
        });
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
              "(in the image: node dist/bin/admin.js promote <email>; same environment as the nodes); otherwise set ADMIN_EMAIL to an address no one has registered.",
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
            id: randomUUID(),
            email,
            name: "Administrator",
            role: "admin",
            preferences: emptyPreferences(),
            now: Date.now(),
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
      this.userCache = new CacheCleaner(
        this.broker,
        this.logger,
        "user",
        (cacher, { id }) => cacher.del(userKey(cacher, id)),
        Boolean(config.redisUrl),
      );
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
      this.userCache.stop();
      await Promise.all([this.limitStore.close(), this.revocations.close()]);
    },
  };
}

/** For Moleculer's runner (`npm run dev`, lib/runner.ts). */
export default forRunner(createUserService);
