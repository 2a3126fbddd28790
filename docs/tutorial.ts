/**
 * Runs docs/tutorial.md as a script (docs/tutorial.system.spec.ts), so the page a learner
 * follows is the page CI ran. Every ```sh block runs, in page order, in its own bash with
 * `errexit`, `nounset` and `pipefail`; the variables a block sets (`TOKEN=…`) carry into the
 * next blocks and into what is typed, as they would in the reader's terminal 2. A block must
 * exit 0 unless its `<!-- run: … -->` comment says otherwise. ```text blocks run only when a
 * comment says how (typed into the REPL); other blocks are not commands.
 *
 * The comment before a block, directives separated by `;`:
 * - `background until "TEXT"`: start the block as terminal 1 (its own process group, stdin a
 *   pipe) and wait until its output shows TEXT;
 * - `type until "TEXT"` / `type until exit`: type the block's lines into terminal 1, one at a
 *   time, each after the previous one's prompt came back, with `$NAME` replaced by terminal 2's
 *   variables; then wait for TEXT in what it printed since, or for it to exit;
 * - `fails`: the block must exit non-zero;
 * - `expect "TEXT"` (repeatable): its output must contain TEXT;
 * - `timeout SECONDS`: its bound (default 120 s; past it, the block is stopped and fails).
 * A comment on its own (no block after it): `browser $URL click "LABEL" until "TEXT"` opens the
 * URL in headless Chromium, presses the button and waits for TEXT on the page.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { signalGroup } from "../test/support/proc";

export interface Step {
  /** 1-based line of the block's opening fence (or of the comment, for a standalone step). */
  line: number;
  kind: "sh" | "background" | "type" | "browser";
  code: string;
  fails: boolean;
  expect: string[];
  until?: string;
  timeoutS: number;
  /** browser: the URL (with $NAME) and the button. */
  url?: string;
  button?: string;
}

const DIRECTIVE = /^<!--\s*run:\s*(.*?)\s*-->$/;
const FENCE = /^```(\S*)\s*$/;

function quoted(text: string, where: string): string {
  const m = /^"([^"]*)"$/.exec(text.trim());
  if (!m) throw new Error(`${where}: expected a "quoted" text, got ${text}`);
  return m[1];
}

/** The steps of a tutorial page; throws, naming the line, on a comment it cannot read. */
export function parseTutorial(markdown: string): Step[] {
  const lines = markdown.split("\n");
  const steps: Step[] = [];
  let pending: { line: number; directives: string[] } | undefined;
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i].trim();
    const directive = DIRECTIVE.exec(text);
    if (directive) {
      if (pending) throw new Error(`line ${pending.line}: a run comment with no block after it`);
      const directives = directive[1]
        .split(";")
        .map((d) => d.trim())
        .filter(Boolean);
      const browser = directives.length === 1 ? /^browser\s+(\$\w+)\s+click\s+(".*?")\s+until\s+(".*")$/.exec(directives[0]) : null;
      if (browser) {
        const where = `line ${i + 1}`;
        steps.push({
          line: i + 1,
          kind: "browser",
          code: "",
          fails: false,
          expect: [],
          url: browser[1],
          button: quoted(browser[2], where),
          until: quoted(browser[3], where),
          timeoutS: 60,
        });
      } else pending = { line: i + 1, directives };
      continue;
    }
    const fence = FENCE.exec(lines[i]);
    if (!fence) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    const lang = fence[1] || "(unlabelled)";
    const step: Step = { line: start + 1, kind: "sh", code: body.join("\n"), fails: false, expect: [], timeoutS: 120 };
    for (const d of pending?.directives ?? []) {
      const where = `line ${pending!.line}`;
      let m: RegExpExecArray | null;
      if ((m = /^background until (".*")$/.exec(d))) [step.kind, step.until] = ["background", quoted(m[1], where)];
      else if ((m = /^type until (exit|".*")$/.exec(d)))
        [step.kind, step.until] = ["type", m[1] === "exit" ? undefined : quoted(m[1], where)];
      else if (d === "fails") step.fails = true;
      else if ((m = /^expect (".*")$/.exec(d))) step.expect.push(quoted(m[1], where));
      else if ((m = /^timeout (\d+)$/.exec(d))) step.timeoutS = Number(m[1]);
      else throw new Error(`${where}: unknown run directive "${d}"`);
    }
    pending = undefined;
    if (lang === "sh" || step.kind === "type") {
      if (step.kind === "type" ? lang !== "text" : lang !== "sh")
        throw new Error(`line ${start + 1}: a ${step.kind} step wants a \`\`\`${step.kind === "type" ? "text" : "sh"} block`);
      steps.push(step);
    } else if (step.kind !== "sh" || step.fails || step.expect.length)
      throw new Error(`line ${start + 1}: run directives on a ${lang} block`);
  }
  if (pending) throw new Error(`line ${pending.line}: a run comment with no block after it`);
  return steps;
}

/** `$NAME` replaced by the variable's value; an unset one is an error (as under `nounset`). */
export function expand(text: string, env: Record<string, string | undefined>): string {
  return text.replace(/\$(\w+)/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined) throw new Error(`$${name} is not set (no earlier block set it)`);
    return value;
  });
}

export interface RunHooks {
  /** Each line of output, as it comes. */
  log(line: string): void;
  /** Opens a URL and presses a button (test/support/chromium.ts pressButton). */
  pressButton(url: string, button: string, until: string, timeoutMs: number): Promise<string>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The process groups the steps started (each step runs in a group of its own, so a timeout or a
 * stop reaches npm, tsx, node and whatever they started). They are killed when this process
 * exits or is told to stop (SIGINT, SIGTERM: bin/test.ts's file timeout); a SIGKILL of this
 * process leaves them running, which nothing here can prevent.
 */
const groups = new Set<number>();
let cleanupInstalled = false;
function trackGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  const pid = child.pid;
  groups.add(pid);
  child.on("exit", () => groups.delete(pid));
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on("exit", () => {
    for (const g of groups) signalGroup(g, "SIGKILL");
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      for (const g of groups) signalGroup(g, "SIGKILL");
      process.exit(130);
    });
}

/** The REPL's prompt (moleculer-repl), printed again when a typed command is done. */
const PROMPT = "mol $";

/** Terminal 1: a background process group whose output is kept. */
class Background {
  output = "";
  exited: number | null | undefined = undefined;
  constructor(readonly child: ChildProcess) {
    const take = (chunk: Buffer) => (this.output += chunk.toString());
    child.stdout!.on("data", take);
    child.stderr!.on("data", take);
    // A line typed as it exits: the exit is what the step reports, not an EPIPE.
    child.stdin!.on("error", () => undefined);
    child.on("exit", (code, signal) => (this.exited = code ?? (signal ? 128 : null)));
    trackGroup(child);
  }
  async waitFor(test: () => boolean, timeoutS: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutS * 1000;
    while (!test()) {
      if (Date.now() > deadline)
        throw new Error(`terminal 1: ${what} not seen within ${timeoutS} s; its output ends:\n${this.output.slice(-3000)}`);
      await sleep(100);
    }
  }
  async stop(): Promise<void> {
    const pid = this.child.pid;
    if (this.exited !== undefined || pid === undefined) return;
    signalGroup(pid, "SIGINT");
    await this.waitFor(() => this.exited !== undefined, 30, "the exit after Ctrl-C").catch(() => signalGroup(pid, "SIGKILL"));
  }
}

/**
 * Runs the steps in `cwd` from `env`; throws at the first step that does not do what the page
 * says, naming its line. Terminal 1 is stopped at the end, whatever happened.
 */
export async function runTutorial(steps: Step[], cwd: string, env: Record<string, string | undefined>, hooks: RunHooks): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "meridian-tutorial-run-"));
  let vars: Record<string, string | undefined> = { ...env };
  let terminal1: Background | undefined;
  try {
    for (const step of steps) {
      const at = `docs/tutorial.md:${step.line}`;
      hooks.log(`--- ${at} (${step.kind}${step.fails ? ", must fail" : ""})`);
      if (step.kind === "browser") {
        const url = expand(step.url!, vars);
        const text = await hooks.pressButton(url, step.button!, step.until!, step.timeoutS * 1000);
        hooks.log(text);
        continue;
      }
      if (step.kind === "background") {
        if (terminal1 && terminal1.exited === undefined) throw new Error(`${at}: terminal 1 is still running`);
        const child = spawn("bash", ["-o", "errexit", "-o", "nounset", "-o", "pipefail", "-c", step.code], {
          cwd,
          env: vars,
          detached: true,
          stdio: ["pipe", "pipe", "pipe"],
        });
        terminal1 = new Background(child);
        await terminal1.waitFor(
          () => terminal1!.output.includes(step.until!) || terminal1!.exited !== undefined,
          step.timeoutS,
          `"${step.until}"`,
        );
        if (terminal1.exited !== undefined)
          throw new Error(`${at}: terminal 1 exited (${terminal1.exited}):\n${terminal1.output.slice(-3000)}`);
        hooks.log(terminal1.output.trim());
        continue;
      }
      if (step.kind === "type") {
        const t1 = terminal1;
        if (!t1 || t1.exited !== undefined) throw new Error(`${at}: nothing runs in terminal 1 to type into`);
        const from = t1.output.length;
        for (const line of step.code.split("\n").filter((l) => l.trim())) {
          if (t1.exited !== undefined) throw new Error(`${at}: terminal 1 exited before "${line}" was typed`);
          const prompts = t1.output.split(PROMPT).length;
          t1.child.stdin!.write(`${expand(line, vars)}\n`);
          await t1.waitFor(
            () => t1.output.split(PROMPT).length > prompts || t1.exited !== undefined,
            step.timeoutS,
            `the prompt after "${line}"`,
          );
        }
        if (step.until === undefined) await t1.waitFor(() => t1.exited !== undefined, step.timeoutS, "its exit");
        else {
          await t1.waitFor(() => t1.output.slice(from).includes(step.until!) || t1.exited !== undefined, step.timeoutS, `"${step.until}"`);
          if (!t1.output.slice(from).includes(step.until))
            throw new Error(`${at}: terminal 1 exited (${t1.exited}) without printing "${step.until}":\n${t1.output.slice(-3000)}`);
        }
        const printed = t1.output.slice(from);
        hooks.log(printed.trim());
        for (const e of step.expect) if (!printed.includes(e)) throw new Error(`${at}: expected "${e}" in what terminal 1 printed`);
        continue;
      }
      // A foreground block in terminal 2; `set -a` exports what it assigns, and `env -0` hands
      // the variables to the next block.
      const envFile = path.join(work, "env");
      fs.rmSync(envFile, { force: true });
      const child = spawn(
        "bash",
        ["-o", "errexit", "-o", "nounset", "-o", "pipefail", "-c", `set -a\n${step.code}\nenv -0 > "${envFile}"`],
        {
          cwd,
          env: vars,
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let output = "";
      let partial = "";
      const take = (chunk: Buffer) => {
        output += chunk.toString();
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) hooks.log(l);
      };
      child.stdout.on("data", take);
      child.stderr.on("data", take);
      trackGroup(child);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        if (child.pid !== undefined) signalGroup(child.pid, "SIGKILL");
      }, step.timeoutS * 1000);
      const code = await new Promise<number>((resolve) => child.on("exit", (c, signal) => resolve(c ?? (signal ? 128 : 1))));
      clearTimeout(timer);
      if (partial) hooks.log(partial);
      if (timedOut) throw new Error(`${at}: stopped after its ${step.timeoutS} s`);
      if (step.fails ? code === 0 : code !== 0)
        throw new Error(`${at}: exited ${code}, ${step.fails ? "where the page says it fails" : "where the page says it succeeds"}`);
      for (const e of step.expect) if (!output.includes(e)) throw new Error(`${at}: expected "${e}" in its output`);
      if (!step.fails)
        vars = Object.fromEntries(
          fs
            .readFileSync(envFile, "utf8")
            .split("\0")
            .filter(Boolean)
            .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
        );
    }
  } finally {
    await terminal1?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}
