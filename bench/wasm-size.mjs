// Size of the worker's wasm: raw and gzipped, by section, code bytes by crate (from the
// function names in a module's `name` section), and what the module would weigh without its
// custom sections (names are not needed to run).
//
//   node bench/wasm-size.mjs build/index_bg.wasm [NAMED.wasm]   -> one JSON object on stdout
//
// When the bundle's names are stripped, the crate breakdown comes from NAMED.wasm instead: the
// linker's output before wasm-bindgen and wasm-opt (target/wasm32-unknown-unknown/worker/),
// which keeps its names; its shares, not its absolute sizes, carry over.
import { existsSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const gz = (b) => gzipSync(b, { level: 9 }).length;

const SECTION_NAMES = ["custom", "type", "import", "function", "table", "memory", "global",
  "export", "start", "element", "code", "data", "datacount", "tag"];

function leb(buf, p) {
  let result = 0, shift = 0, b;
  do {
    b = buf[p++];
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return [result, p];
}

function str(buf, p) {
  const [len, q] = leb(buf, p);
  return [buf.toString("utf8", q, q + len), q + len];
}

/** Sections, function body sizes and function names of a wasm module. */
function analyse(bytes) {
  const sections = {};
  const kept = [bytes.subarray(0, 8)]; // magic + version, then every non-custom section
  const names = new Map(); // function index -> name
  let importedFuncs = 0;
  let bodies = [];
  let pos = 8;
  while (pos < bytes.length) {
    const start = pos;
    const id = bytes[pos++];
    let size;
    [size, pos] = leb(bytes, pos);
    const end = pos + size;
    let label = SECTION_NAMES[id] ?? `id${id}`;
    if (id === 0) {
      const [name, p] = str(bytes, pos);
      label = `custom:${name}`;
      if (name === "name") parseNames(bytes, p, end, names);
    } else {
      kept.push(bytes.subarray(start, end));
    }
    if (id === 2) importedFuncs = countFuncImports(bytes, pos);
    if (id === 10) bodies = parseCode(bytes, pos);
    sections[label] = (sections[label] ?? 0) + (end - start);
    pos = end;
  }
  return { sections, stripped: Buffer.concat(kept), names, importedFuncs, bodies };
}

function countFuncImports(buf, p) {
  let n, count = 0;
  [n, p] = leb(buf, p);
  for (let i = 0; i < n; i++) {
    [, p] = str(buf, p); // module
    [, p] = str(buf, p); // field
    const kind = buf[p++];
    if (kind === 0) { [, p] = leb(buf, p); count++; } // function: type index
    else if (kind === 1) { p++; const flags = buf[p++]; [, p] = leb(buf, p); if (flags & 1) [, p] = leb(buf, p); } // table
    else if (kind === 2) { const flags = buf[p++]; [, p] = leb(buf, p); if (flags & 1) [, p] = leb(buf, p); } // memory
    else if (kind === 3) { p += 2; } // global: value type, mutability
    else if (kind === 4) { p++; [, p] = leb(buf, p); } // tag
    else throw new Error(`unknown import kind ${kind}`);
  }
  return count;
}

function parseCode(buf, p) {
  let n;
  [n, p] = leb(buf, p);
  const sizes = [];
  for (let i = 0; i < n; i++) {
    const before = p;
    let size;
    [size, p] = leb(buf, p);
    sizes.push(p - before + size);
    p += size;
  }
  return sizes;
}

function parseNames(buf, p, end, names) {
  while (p < end) {
    const sub = buf[p++];
    let size;
    [size, p] = leb(buf, p);
    if (sub === 1) { // function names
      let q = p, n;
      [n, q] = leb(buf, q);
      for (let i = 0; i < n; i++) {
        let idx, name;
        [idx, q] = leb(buf, q);
        [name, q] = str(buf, q);
        names.set(idx, name);
      }
    }
    p += size;
  }
}

// The crate a function belongs to: the first path segment of its demangled name; for
// `<T as Trait>::f` the crate of T. std's crates carry a hash: core[c5930c85a12de822]::...
function crateOf(name) {
  if (!name) return "(unnamed)";
  // Mangled names (the linker's output): v0 `_R...`, the first crate root `C[s<hash>_]<len><ident>`;
  // legacy `_ZN<len><ident>...`, the first path segment.
  if (name.startsWith("_R")) {
    const re = /C(?:s[0-9a-zA-Z]*_)?(\d+)/g;
    let m;
    while ((m = re.exec(name))) {
      const len = Number(m[1]);
      const ident = name.substr(m.index + m[0].length, len);
      if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(ident) && ident.length === len) return ident;
    }
    return "(other)";
  }
  if (name.startsWith("_ZN")) {
    const m = name.match(/^_ZN(\d+)/);
    const seg = name.substr(m[0].length, Number(m[1]))
      .replace(/\$LT\$/g, "<").replace(/\$GT\$/g, ">").replace(/\$u20\$/g, " ")
      .replace(/\$RF\$/g, "&").replace(/\.\./g, "::");
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) return seg;
    return crateOf(seg);
  }
  if (/^(__wbg|__wbindgen|__externref|wbindgen)/.test(name)) return "wasm_bindgen";
  const n = name.replace(/^[_<&\[(]+/, "").replace(/^(mut |dyn )/, "");
  const m = n.match(/^([A-Za-z_][A-Za-z0-9_]*)(\[[0-9a-f]+\])?(::|>)/);
  if (m) return ["f32", "f64", "str", "char", "T"].includes(m[1]) ? "core" : m[1];
  if (/^(__wbg|__wbindgen|wasm_bindgen)/.test(n)) return "wasm_bindgen";
  if (/^(dlmalloc|__rust|rust_)/.test(n)) return "std";
  return "(other)";
}

function byCrate(m) {
  const out = {};
  m.bodies.forEach((size, i) => {
    const c = crateOf(m.names.get(m.importedFuncs + i));
    out[c] = (out[c] ?? 0) + size;
  });
  return Object.entries(out).sort((a, b) => b[1] - a[1]).map(([crate, bytes]) => ({ crate, bytes }));
}

const bytes = readFileSync(process.argv[2]);
const bundle = analyse(bytes);
let source = process.argv[2];
let named = bundle;
// Names for fewer than half of the functions: attribute with the named module if given.
if (bundle.names.size < bundle.bodies.length / 2 && process.argv[3] && existsSync(process.argv[3])) {
  source = process.argv[3];
  named = analyse(readFileSync(source));
}

process.stdout.write(JSON.stringify({
  file: process.argv[2],
  raw: bytes.length,
  gzip: gz(bytes),
  without_custom_sections: { raw: bundle.stripped.length, gzip: gz(bundle.stripped) },
  sections: bundle.sections,
  functions: bundle.bodies.length,
  named_functions: bundle.names.size,
  code_by_crate_from: source,
  code_by_crate_functions: named.bodies.length,
  code_by_crate: byCrate(named),
}) + "\n");
