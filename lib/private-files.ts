/**
 * Embedded mode's files (SQLite databases, the generated JWT secret, the sandbox's key)
 * hold credentials and customers' data: they are created readable by their owner only
 * (files 0600, a directory this creates 0700), and a file of ours found wider (an older
 * install) is narrowed when it is opened. A DATA_DIR that already exists keeps its own
 * mode: it is the operator's directory (it could be the working directory).
 */
import fs from "node:fs";

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Creates `dir` (and missing parents) as 0700; an existing directory is left as it is. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
}

/**
 * Makes sure `file` exists with mode 0600 before a library opens it (SQLite gives its
 * -wal and -shm files the database file's mode), narrowing an existing one.
 */
export function ensurePrivateFile(file: string): void {
  fs.closeSync(fs.openSync(file, "a", PRIVATE_FILE_MODE));
  if ((fs.statSync(file).mode & 0o077) !== 0) fs.chmodSync(file, PRIVATE_FILE_MODE);
}

/**
 * The content of `file`, or `make()` written to it (0600) when it does not exist yet.
 * Safe with several processes starting at once: `wx` lets one win, the others read its file.
 */
export function readOrCreatePrivateFile(file: string, make: () => string): string {
  try {
    const existing = fs.readFileSync(file, "utf8");
    ensurePrivateFile(file);
    return existing;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const fresh = make();
  try {
    fs.writeFileSync(file, fresh, { mode: PRIVATE_FILE_MODE, flag: "wx" });
    return fresh;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return fs.readFileSync(file, "utf8");
  }
}
