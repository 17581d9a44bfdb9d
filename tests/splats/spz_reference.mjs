// The reference SPZ library (nianticlabs/spz compiled to WebAssembly, npm @adobe/spz) as a
// command line for tests/splats/test_web_formats.py:
//   node spz_reference.mjs MODULE load FILE.spz OUT.json     decode a .spz to plain arrays
//   node spz_reference.mjs MODULE save IN.json FILE.spz VER  encode plain arrays as version VER
// MODULE is the path of the package's dist/spz.js. Arrays keep the library's own layout:
// positions xyz, scales log, rotations xyzw, alphas logit, colors SH DC, sh coefficient-major.
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [modulePath, mode, input, output, version] = process.argv.slice(2);
const createSpzModule = (await import(pathToFileURL(modulePath).href)).default;
const spz = await createSpzModule();
const FIELDS = ['positions', 'scales', 'rotations', 'alphas', 'colors', 'sh'];
const UNSPECIFIED = spz.CoordinateSystem.UNSPECIFIED;

if (mode === 'load') {
  const cloud = spz.loadSpzFromBuffer(new Uint8Array(readFileSync(input)), { to: UNSPECIFIED });
  if (!cloud || cloud.numPoints === 0) throw new Error(`the reference could not load ${input}`);
  const out = { numPoints: cloud.numPoints, shDegree: cloud.shDegree,
                antialiased: cloud.antialiased };
  // JSON has no infinities: an opacity byte of 0 or 255 decodes to a logit of -inf or +inf
  for (const f of FIELDS) out[f] = Array.from(cloud[f], (v) => (Number.isFinite(v) ? v : (v > 0 ? 1e30 : -1e30)));
  writeFileSync(output, JSON.stringify(out));
} else if (mode === 'save') {
  const data = JSON.parse(readFileSync(input, 'utf8'));
  const cloud = { numPoints: data.numPoints, shDegree: data.shDegree,
                  antialiased: Boolean(data.antialiased), extensions: [] };
  for (const f of FIELDS) cloud[f] = new Float32Array(data[f]);
  const bytes = spz.saveSpzToBuffer(cloud, { version: Number(version), from: UNSPECIFIED,
                                             sh1Bits: 5, shRestBits: 4 });
  if (!bytes || bytes.length === 0) throw new Error('the reference could not save');
  writeFileSync(output, bytes);
} else {
  throw new Error(`unknown mode ${mode}`);
}
