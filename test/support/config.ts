/** The problems a configuration loader reports (`ConfigError.problems`), or [] when it loads. */
import assert from "node:assert/strict";
import { ConfigError } from "../../lib/config";

export function configProblems(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  return [];
}
