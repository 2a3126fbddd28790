/**
 * Sessions: login (argon2id, throttled per account and address), refresh-token rotation with
 * reuse detection (a replayed refresh token ends its whole login), logout. An access token
 * names its login (`sid`), so ending the login ends the token at the gateway too. Bound into
 * the `user` service by user.service.ts.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import argon2 from "argon2";
import type { ActionParams, ActionResponse } from "../../proto/gen/contracts";
import type { AppConfig } from "../../lib/config";
import { requireUser } from "../../lib/context";
import { inTransaction } from "../../lib/db";
import { unauthorized } from "../../lib/errors";
import { normalizeEmail, parseRefreshToken, refreshVerdict, toPublicUser, type UserRecord } from "./user.domain";
import * as repo from "./user.repo";
import { Params } from "../../proto/gen/params";
import type { Ctx, UserServiceThis } from "./user.this";
import type { TypedActions } from "../../lib/service-schema";

/** Refresh tokens are stored hashed: a leaked table gives no usable token. */
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

export function sessionActions(): TypedActions<UserServiceThis> {
  return {
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
        const session = await this.issueSession(found.user);
        return { user: toPublicUser(session.user), ...session.tokens };
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
          if (!row || !timingSafeEqual(Buffer.from(row.secretHash), Buffer.from(sha256(parsed.secret))))
            return { kind: "invalid" as const };
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
        return (await this.issueSession(outcome.user, outcome.familyId)).tokens;
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
        if (row && row.userId === me.id && timingSafeEqual(Buffer.from(row.secretHash), Buffer.from(sha256(parsed.secret)))) {
          await repo.revokeFamily(this.db, row.familyId, Date.now());
          // The login's access tokens stop working now, not when they expire.
          await this.revocations.revokeSession(row.familyId);
        }
        ctx.meta.$statusCode = 204;
        return null;
      },
    },
  };
}

export function sessionMethods(config: AppConfig) {
  return {
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
      // The user as it is now (not as read before the password check): a role change racing
      // this login is then either in the token or, being later, applied by the gateway; the
      // answer's `user` is this same read, so it never names another role than the token.
      const current = (await repo.findUserById(this.db, user.id)) ?? user;
      // The access token names its login (`sid` = the refresh family), so ending the login ends it too.
      const accessToken = await this.tokens.sign({ id: user.id, role: current.role, sessionId });
      return { user: current, tokens: { accessToken, refreshToken: `${id}.${secret}` } };
    },
  };
}
