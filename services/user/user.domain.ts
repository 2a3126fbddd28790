/**
 * User rules as pure functions: no knex, no Moleculer. Handlers stay thin and call these.
 */

import type { Role } from "../../lib/auth/tokens";
import type { Address } from "../../proto/gen/meridian/user/v1/user";

export type { Role };

export interface Preferences {
  categories: string[];
  brands: string[];
}

export interface UserRecord {
  id: string;
  email: string;
  name: string;
  role: Role;
  preferences: Preferences;
  createdAt: number;
  updatedAt: number;
}

/** The `user` of API.md: never a password hash. */
export interface PublicUser {
  id: string;
  email: string;
  name: string;
  role: Role;
  preferences: Preferences;
  createdAt: string;
}

export const PASSWORD_MIN = 8;
/** argon2 cost grows with input; a cap keeps a 10 MB "password" from being a DoS. */
export const PASSWORD_MAX = 256;
export const PREFERENCE_MAX_ITEMS = 50;
export const ADDRESS_MAX_PER_USER = 50;

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Problems with a password, empty when acceptable (API.md: < 8 chars is 422). */
export function passwordProblems(password: string, email?: string): string[] {
  const problems: string[] = [];
  // Count code points, not UTF-16 units, so "🔒🔒🔒🔒" is 4 characters.
  const length = [...password].length;
  if (length < PASSWORD_MIN) problems.push(`must be at least ${PASSWORD_MIN} characters`);
  if (length > PASSWORD_MAX) problems.push(`must be at most ${PASSWORD_MAX} characters`);
  if (email && password.trim().toLowerCase() === normalizeEmail(email)) problems.push("must not be the e-mail address");
  return problems;
}

/** Trims, drops empties and duplicates (case-insensitively), keeps the first spelling. */
export function normalizePreferenceList(values: string[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const raw of values) {
    const v = raw.trim();
    const key = v.toLowerCase();
    if (!v || seen.has(key)) continue;
    seen.add(key);
    out.push(v);
  }
  return out.slice(0, PREFERENCE_MAX_ITEMS);
}

export function mergePreferences(current: Preferences, patch: Partial<Preferences> | undefined): Preferences {
  return {
    categories: patch?.categories ? normalizePreferenceList(patch.categories) : current.categories,
    brands: patch?.brands ? normalizePreferenceList(patch.brands) : current.brands,
  };
}

/** No preferences: fresh arrays each time (a value the cache holds is frozen, lib/cached-json.ts, so no two share them). */
export const emptyPreferences = (): Preferences => ({ categories: [], brands: [] });

export function parsePreferences(json: string | null | undefined): Preferences {
  try {
    const p = JSON.parse(json ?? "{}") as Partial<Preferences>;
    return {
      categories: Array.isArray(p.categories) ? p.categories.filter((x) => typeof x === "string") : [],
      brands: Array.isArray(p.brands) ? p.brands.filter((x) => typeof x === "string") : [],
    };
  } catch {
    return emptyPreferences();
  }
}

export function toPublicUser(u: UserRecord): PublicUser {
  return {
    id: u.id,
    email: u.email,
    name: u.name,
    role: u.role,
    preferences: u.preferences,
    createdAt: new Date(u.createdAt).toISOString(),
  };
}

// ---- Refresh tokens: opaque `<id>.<secret>`; only a hash of the secret is stored ----

export interface RefreshTokenState {
  expiresAt: number;
  usedAt: number | null;
  revokedAt: number | null;
}

export type RefreshVerdict = "valid" | "expired" | "revoked" | "reused";

/**
 * What presenting this refresh token means. A token already rotated (`usedAt`) that
 * comes back is reuse: someone holds a copy, so the caller revokes the whole family
 * (RFC 6819 §5.2.2.3 / OAuth 2.0 Security BCP "refresh token rotation").
 */
export function refreshVerdict(t: RefreshTokenState, now: number): RefreshVerdict {
  if (t.usedAt !== null) return "reused";
  if (t.revokedAt !== null) return "revoked";
  if (t.expiresAt <= now) return "expired";
  return "valid";
}

const REFRESH_TOKEN_SHAPE = /^([0-9a-f-]{36})\.([A-Za-z0-9_-]{43})$/;

export function parseRefreshToken(token: string): { id: string; secret: string } | null {
  const m = REFRESH_TOKEN_SHAPE.exec(token);
  return m ? { id: m[1], secret: m[2] } : null;
}

// ---- Addresses ----

export const ADDRESS_FIELDS = ["recipient", "phone", "line1", "line2", "city", "province", "postalCode", "country"] as const;
export type AddressField = (typeof ADDRESS_FIELDS)[number];
export type AddressInput = Partial<Record<AddressField, string | null>>;

/** A saved address, as its contract (meridian.user.v1.Address) says. */
export type { Address };

/** Only the address fields, trimmed; anything else in the input is ignored (no mass assignment). */
export function pickAddressFields(input: object): AddressInput {
  const out: AddressInput = {};
  for (const f of ADDRESS_FIELDS) {
    const v = (input as Record<string, unknown>)[f];
    if (v === null && (f === "line2" || f === "province")) out[f] = null;
    else if (typeof v === "string") out[f] = f === "country" ? v.trim().toUpperCase() : v.trim();
  }
  return out;
}

/**
 * How long an account stays locked after it ran out of its login budget for the n-th time
 * within a day: one window, then twice that, four times…, at most a day. Growing, so a
 * guesser spread over many addresses gets fewer tries per hour the longer it keeps on.
 */
export const MAX_LOCKOUT_S = 86_400;
export function lockoutSeconds(windowS: number, lockouts: number): number {
  return Math.min(MAX_LOCKOUT_S, windowS * 2 ** Math.max(0, Math.min(lockouts - 1, 20)));
}
