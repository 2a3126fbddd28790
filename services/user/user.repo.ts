/**
 * Data access of the user service: the only file that knows its tables.
 */
import type { Knex } from "knex";
import {
  parsePreferences,
  type Address,
  type AddressInput,
  type Preferences,
  type RefreshTokenState,
  type Role,
  type UserRecord,
} from "./user.domain";

interface UserRow {
  id: string;
  email: string;
  name: string;
  password_hash: string;
  role: Role;
  preferences: string;
  created_at: number | string;
  updated_at: number | string;
}

/**
 * What a user record is read from: never the password hash, which only the login's read by
 * e-mail needs; a read with no use for it does not load it into the process.
 */
const USER_COLUMNS = ["id", "email", "name", "role", "preferences", "created_at", "updated_at"] as const;

const toUser = (r: Omit<UserRow, "password_hash">): UserRecord => ({
  id: r.id,
  email: r.email,
  name: r.name,
  role: r.role,
  preferences: parsePreferences(r.preferences),
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
});

export async function insertUser(
  db: Knex,
  u: { id: string; email: string; name: string; passwordHash: string; role: Role; preferences: Preferences; now: number },
): Promise<UserRecord> {
  await db("users").insert({
    id: u.id,
    email: u.email,
    name: u.name,
    password_hash: u.passwordHash,
    role: u.role,
    preferences: JSON.stringify(u.preferences),
    created_at: u.now,
    updated_at: u.now,
  });
  return { id: u.id, email: u.email, name: u.name, role: u.role, preferences: u.preferences, createdAt: u.now, updatedAt: u.now };
}

export async function findUserById(db: Knex, id: string): Promise<UserRecord | undefined> {
  const row = await db("users").where({ id }).first<Omit<UserRow, "password_hash"> | undefined>(USER_COLUMNS);
  return row && toUser(row);
}

export async function findCredentialsByEmail(db: Knex, email: string): Promise<{ user: UserRecord; passwordHash: string } | undefined> {
  const row = await db<UserRow>("users").where({ email }).first();
  return row && { user: toUser(row), passwordHash: row.password_hash };
}

export async function updateProfile(db: Knex, id: string, patch: { name?: string; preferences?: Preferences }, now: number): Promise<void> {
  const set: Record<string, unknown> = { updated_at: now };
  if (patch.name !== undefined) set.name = patch.name;
  if (patch.preferences !== undefined) set.preferences = JSON.stringify(patch.preferences);
  await db("users").where({ id }).update(set);
}

/** False when there is no such user. */
export async function setRole(db: Knex, id: string, role: Role, now: number): Promise<boolean> {
  return (await db("users").where({ id }).update({ role, updated_at: now })) === 1;
}

/** Users by e-mail prefix (admins looking someone up), newest first. */
export async function listUsers(
  db: Knex,
  q: { emailPrefix?: string; role?: Role; limit: number; offset: number },
): Promise<{ items: UserRecord[]; total: number }> {
  const filtered = () => {
    const b = db("users");
    // The prefix is a value, never a pattern: LIKE's own wildcards in it are escaped.
    if (q.emailPrefix) b.whereRaw("email LIKE ? ESCAPE '!'", [`${q.emailPrefix.replace(/[!%_]/g, "!$&")}%`]);
    if (q.role) b.where({ role: q.role });
    return b;
  };
  const [{ n }] = await filtered().count<{ n: number | string }[]>({ n: "*" });
  const rows = await filtered()
    .orderBy([
      { column: "created_at", order: "desc" },
      { column: "id", order: "asc" },
    ])
    .limit(q.limit)
    .offset(q.offset)
    .select<Omit<UserRow, "password_hash">[]>(USER_COLUMNS);
  return { items: rows.map(toUser), total: Number(n) };
}

// ---- refresh tokens ----

interface RefreshRow {
  id: string;
  family_id: string;
  user_id: string;
  secret_hash: string;
  expires_at: number | string;
  used_at: number | string | null;
  revoked_at: number | string | null;
}

export interface RefreshTokenRecord extends RefreshTokenState {
  id: string;
  familyId: string;
  userId: string;
  secretHash: string;
}

const num = (v: number | string | null) => (v === null ? null : Number(v));

export async function insertRefreshToken(
  db: Knex,
  t: { id: string; familyId: string; userId: string; secretHash: string; expiresAt: number; now: number },
): Promise<void> {
  await db("refresh_tokens").insert({
    id: t.id,
    family_id: t.familyId,
    user_id: t.userId,
    secret_hash: t.secretHash,
    expires_at: t.expiresAt,
    created_at: t.now,
  });
}

export async function findRefreshToken(db: Knex, id: string): Promise<RefreshTokenRecord | undefined> {
  const r = await db<RefreshRow>("refresh_tokens").where({ id }).first();
  return (
    r && {
      id: r.id,
      familyId: r.family_id,
      userId: r.user_id,
      secretHash: r.secret_hash,
      expiresAt: Number(r.expires_at),
      usedAt: num(r.used_at),
      revokedAt: num(r.revoked_at),
    }
  );
}

/**
 * Marks a token used, only if nobody did first: the conditional UPDATE's row count is the
 * guard against two concurrent refreshes with one token both succeeding.
 */
export async function claimRefreshToken(db: Knex, id: string, now: number): Promise<boolean> {
  const n = await db("refresh_tokens").where({ id }).whereNull("used_at").whereNull("revoked_at").update({ used_at: now });
  return n === 1;
}

export async function revokeFamily(db: Knex, familyId: string, now: number): Promise<number> {
  return db("refresh_tokens").where({ family_id: familyId }).whereNull("revoked_at").update({ revoked_at: now });
}

/** Housekeeping: tokens past expiry are useless; keep the table small. */
export async function deleteExpiredRefreshTokens(db: Knex, before: number): Promise<number> {
  return db("refresh_tokens").where("expires_at", "<", before).delete();
}

// ---- addresses ----

interface AddressRow {
  id: string;
  user_id: string;
  recipient: string;
  phone: string;
  line1: string;
  line2: string | null;
  city: string;
  province: string | null;
  postal_code: string;
  country: string;
  created_at: number | string;
  updated_at: number | string;
}

const toAddress = (r: AddressRow): Address => ({
  id: r.id,
  recipient: r.recipient,
  phone: r.phone,
  line1: r.line1,
  line2: r.line2,
  city: r.city,
  province: r.province,
  postalCode: r.postal_code,
  country: r.country,
  createdAt: new Date(Number(r.created_at)).toISOString(),
  updatedAt: new Date(Number(r.updated_at)).toISOString(),
});

const addressColumns = (a: AddressInput): Record<string, unknown> => {
  const map: Record<keyof AddressInput, string> = {
    recipient: "recipient",
    phone: "phone",
    line1: "line1",
    line2: "line2",
    city: "city",
    province: "province",
    postalCode: "postal_code",
    country: "country",
  };
  const out: Record<string, unknown> = {};
  for (const [k, col] of Object.entries(map)) {
    const v = a[k as keyof AddressInput];
    if (v !== undefined) out[col] = v;
  }
  return out;
};

export async function listAddresses(db: Knex, userId: string): Promise<Address[]> {
  const rows = await db<AddressRow>("addresses")
    .where({ user_id: userId })
    .orderBy([{ column: "created_at" }, { column: "id" }]);
  return rows.map(toAddress);
}

export async function countAddresses(db: Knex, userId: string): Promise<number> {
  const row = (await db("addresses").where({ user_id: userId }).count({ n: "*" }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}

/** Scoped by owner: another user's address is simply not found. */
export async function findAddress(db: Knex, userId: string, id: string): Promise<Address | undefined> {
  const row = await db<AddressRow>("addresses").where({ id, user_id: userId }).first();
  return row && toAddress(row);
}

export async function insertAddress(db: Knex, userId: string, id: string, a: AddressInput, now: number): Promise<void> {
  await db("addresses").insert({ id, user_id: userId, ...addressColumns(a), created_at: now, updated_at: now });
}

export async function updateAddress(db: Knex, userId: string, id: string, a: AddressInput, now: number): Promise<boolean> {
  const n = await db("addresses")
    .where({ id, user_id: userId })
    .update({ ...addressColumns(a), updated_at: now });
  return n === 1;
}

export async function deleteAddress(db: Knex, userId: string, id: string): Promise<boolean> {
  const n = await db("addresses").where({ id, user_id: userId }).delete();
  return n === 1;
}
