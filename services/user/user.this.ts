/** What the user service's handlers see as `this`, its request context, and the password hashing settings. */
import argon2 from "argon2";
import type { ServiceBroker } from "moleculer";
import type { AccessTokens } from "../../lib/auth/tokens";
import type { CacheCleaner } from "../../lib/cache-clean";
import type { RequestContext } from "../../lib/context";
import type { Db } from "../../lib/db";
import type { RateLimitStore } from "../../lib/rate-limit";
import type { Revocations } from "../../lib/auth/revocations";
import type { LoginThrottle } from "./login-throttle";
import type { EventsServiceThis } from "../../mixins/events.mixin";
import type { UserRecord, Address, PublicUser } from "./user.domain";

/** argon2id with OWASP's minimum (docs/api.md, "Users and tokens"): 19 MiB, 2 passes, 1 lane. */
export const ARGON2_OPTIONS = { type: argon2.argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

export interface UserServiceThis extends EventsServiceThis {
  db: Db;
  broker: ServiceBroker;
  tokens: AccessTokens;
  limitStore: RateLimitStore;
  loginThrottle: LoginThrottle;
  revocations: Revocations;
  dummyHash: string;
  userCache: CacheCleaner<{ id: string }>;
  /** An account as shown (`toPublicUser`), through `user.get`'s cache entry. */
  publicUser(id: string): Promise<PublicUser | undefined>;
  logger: { info(...a: unknown[]): void; warn(...a: unknown[]): void };
  /** A new refresh token (in `familyId`, or a new login) and access token; `user` as read for the token's role. */
  issueSession(user: UserRecord, familyId?: string): Promise<{ user: UserRecord; tokens: { accessToken: string; refreshToken: string } }>;
  addressOf(userId: string, id: string): Promise<Address>;
  bootstrapAdmin(): Promise<void>;
}

export type Ctx<P = Record<string, unknown>> = RequestContext<P>;
