// Builds the dashboard into src/openmanager/web/static/ (committed, so running the hub needs no Node.js):
//   app.js + app.css  from src/main.ts (esbuild; "openmanager-client" stays an import of /static/openmanager.js)
//   sw.js             from src/sw.ts (the service worker for Web Push)
//   index.html        from src/index.html (asset URLs carry the source hash, so browsers never mix versions)
//   build-hash.txt    the hash of the sources and of every built file; tests/browser/test_build_hash.py
//                     recomputes both without Node.js and fails when they differ (run `make web`).
// `node build.mjs --print-hash` prints the source hash only.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const WEB = path.dirname(fileURLToPath(import.meta.url));
const OUT = path.resolve(WEB, "../src/openmanager/web/static");
/** What the build reads, relative to web/ (a folder means every file under it). */
export const SOURCES = ["build.mjs", "package.json", "package-lock.json", "tsconfig.json", "tsconfig.sw.json", "src"];
const OUTPUTS = ["app.css", "app.js", "index.html", "sw.js"];

const sha256 = (data) => createHash("sha256").update(data).digest("hex");

async function files(rel) {
  const full = path.join(WEB, rel);
  let entries;
  try {
    entries = await readdir(full, { withFileTypes: true });
  } catch (error) {
    if (error.code === "ENOTDIR") return [rel];
    throw error;
  }
  const out = [];
  for (const e of entries) out.push(...(await files(path.posix.join(rel, e.name))));
  return out;
}

/** sha256 over "<path>\n<sha256 of its bytes>\n" for every source file, sorted by path (UTF-8 code units). */
export async function sourceHash() {
  const all = [];
  for (const s of SOURCES) all.push(...(await files(s)));
  all.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const h = createHash("sha256");
  for (const rel of all) h.update(`${rel}\n${sha256(await readFile(path.join(WEB, rel)))}\n`);
  return h.digest("hex");
}

const clientPlugin = {
  name: "openmanager-client",
  setup(b) {
    b.onResolve({ filter: /^openmanager-client$/ }, () => ({ path: "/static/openmanager.js", external: true }));
  },
};

async function main() {
  const hash = await sourceHash();
  if (process.argv.includes("--print-hash")) {
    console.log(hash);
    return;
  }
  const common = { bundle: true, minify: true, legalComments: "none", target: ["chrome109", "firefox115", "safari16"],
    logLevel: "warning", write: false, charset: "utf8" };
  const app = await build({ ...common, entryPoints: [path.join(WEB, "src/main.ts")], outfile: path.join(OUT, "app.js"),
    format: "esm", plugins: [clientPlugin] });
  const sw = await build({ ...common, entryPoints: [path.join(WEB, "src/sw.ts")], outfile: path.join(OUT, "sw.js"), format: "iife" });
  const written = new Map();
  for (const f of [...app.outputFiles, ...sw.outputFiles]) written.set(path.basename(f.path), Buffer.from(f.contents));
  const html = (await readFile(path.join(WEB, "src/index.html"), "utf8")).replaceAll("{{hash}}", hash.slice(0, 12));
  written.set("index.html", Buffer.from(html, "utf8"));
  const names = [...written.keys()].sort();
  if (names.join() !== OUTPUTS.join()) throw new Error(`unexpected outputs: ${names.join(", ")}`);
  const lines = [
    "# Written by web/build.mjs (`make web`): the hash of the dashboard's sources in web/ and of each built file.",
    "# tests/browser/test_build_hash.py recomputes them; when they differ, run `make web` and commit the result.",
    `sources ${hash}`,
  ];
  for (const name of names) {
    await writeFile(path.join(OUT, name), written.get(name));
    lines.push(`${name} ${sha256(written.get(name))}`);
  }
  await writeFile(path.join(OUT, "build-hash.txt"), `${lines.join("\n")}\n`);
  const size = (n) => `${n} ${(written.get(n).length / 1024).toFixed(1)} KiB`;
  console.log(`built ${names.map(size).join(", ")}; sources ${hash.slice(0, 12)}`);
}

await main();
