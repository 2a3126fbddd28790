/**
 * `engines` tells the truth (#18): it admits the Node.js this suite runs on (CI's) and the one
 * the image runs (the Dockerfile's runtime stage), and no major that neither tests nor runs.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { it } from "mocha";
import semver from "semver";

const ROOT = path.join(__dirname, "..");
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as { engines: { node: string } };

it("engines admits the Node.js of this run and the image's, and only their majors", () => {
  const range = pkg.engines.node;
  assert.ok(semver.satisfies(process.version, range), `this run's ${process.version} is outside engines ${range}`);
  const from = fs
    .readFileSync(path.join(ROOT, "Dockerfile"), "utf8")
    .split(/^FROM /m)
    .at(-1)!;
  const imageMajor = Number(/^node:(\d+)/.exec(from)?.[1]);
  assert.ok(imageMajor > 0, "the runtime stage is FROM node:<major>");
  // The image takes the newest release of its major.
  assert.ok(semver.satisfies(`${imageMajor}.99.0`, range), `the image's Node ${imageMajor} is outside engines ${range}`);
  // CI tests Node 20 and the image runs 22: exactly those majors, whichever of them runs this.
  const majors = [18, 19, 20, 21, 22, 23, 24, 25].filter((m) => semver.intersects(range, `^${m}.0.0`));
  assert.deepEqual(majors, [20, 22], "no other major is claimed");
  assert.ok(majors.includes(semver.major(process.version)) && majors.includes(imageMajor));
});
