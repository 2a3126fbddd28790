/**
 * A private MariaDB server for runs that stop and restart the database (chaos), never the
 * machine's shared one: its own data dir (a fresh `mariadb-install-db`), TCP port and socket
 * in a temp dir, run as the current user, no grant tables (a throwaway instance on
 * 127.0.0.1 only: root without a password, as the machine's own test server has it).
 *
 * `stop()` (a clean shutdown, SIGTERM) / `start()` restart it on the same data; `kill()`
 * is the crash (SIGKILL: InnoDB recovers on the next start); `destroy()` removes it all.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./ports";
import { settlesWithin } from "./proc";

const INSTALL = process.env.MARIADB_INSTALL_DB ?? "/usr/bin/mariadb-install-db";
const SERVER = process.env.MARIADBD ?? "/usr/sbin/mariadbd";

export interface PrivateMariaDb {
  /** `mysql://root@127.0.0.1:<port>/` for MYSQL_URL. */
  url: string;
  port: number;
  dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  kill(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startPrivateMariaDb(): Promise<PrivateMariaDb> {
  if (!fs.existsSync(SERVER)) throw new Error(`${SERVER} not found: install Debian's mariadb-server`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-mariadb-"));
  const data = path.join(dir, "data");
  const user = os.userInfo().username;
  await promisify(execFile)(
    INSTALL,
    [`--datadir=${data}`, `--user=${user}`, "--skip-test-db", "--auth-root-authentication-method=normal", "--no-defaults"],
    { timeout: 120_000 },
  );
  const port = await freePort();
  const args = [
    "--no-defaults",
    `--datadir=${data}`,
    `--port=${port}`,
    "--bind-address=127.0.0.1",
    `--socket=${path.join(dir, "mysqld.sock")}`,
    `--pid-file=${path.join(dir, "mysqld.pid")}`,
    `--user=${user}`,
    "--skip-grant-tables",
    // Many node processes, each service with a pool of up to 10 connections.
    "--max-connections=1000",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_bin",
    // Small and quick to start: this is a test instance.
    "--innodb-buffer-pool-size=128M",
    "--innodb-log-file-size=64M",
    "--log-error=" + path.join(dir, "error.log"),
  ];
  let child: ChildProcess | null = null;
  const exited = (proc: ChildProcess) =>
    proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => proc.once("exit", () => r()));

  async function ping(): Promise<boolean> {
    try {
      await promisify(execFile)("mariadb", ["--no-defaults", "-h", "127.0.0.1", "-P", String(port), "-uroot", "-e", "SELECT 1"], {
        timeout: 5000,
      });
      return true;
    } catch {
      return false;
    }
  }

  async function start(): Promise<void> {
    if (child) return;
    const proc = spawn(SERVER, args, { stdio: "ignore" });
    child = proc;
    proc.once("exit", () => {
      if (child === proc) child = null;
    });
    const deadline = Date.now() + 60_000;
    while (!(await ping())) {
      if (child !== proc) throw new Error(`private MariaDB exited during startup, see ${dir}/error.log`);
      if (Date.now() > deadline) throw new Error(`private MariaDB not up after 60 s, see ${dir}/error.log`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async function halt(signal: NodeJS.Signals): Promise<void> {
    const proc = child;
    if (!proc) return;
    proc.kill(signal);
    await settlesWithin(exited(proc), 60_000);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited(proc);
    }
    child = null;
  }

  await start().catch(async (err) => {
    await halt("SIGKILL");
    throw err;
  });
  return {
    url: `mysql://root@127.0.0.1:${port}/`,
    port,
    dir,
    start,
    stop: () => halt("SIGTERM"),
    kill: () => halt("SIGKILL"),
    async destroy() {
      await halt("SIGTERM");
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
