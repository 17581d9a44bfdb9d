// GaussianSplats3D (npm @mkkellogg/gaussian-splats-3d, with three) as a command line for
// tests/splats/test_web_interop.py:
//   node ksplat_reference.mjs MODULE make FILE.ply OUT.ksplat LEVEL DEGREE   convert, as its
//                                                      create-ksplat does (sections, buckets)
//   node ksplat_reference.mjs MODULE read FILE.ksplat OUT.json               decode every splat
// MODULE is the path of the package's build/gaussian-splats-3d.module.js. The JSON keeps the
// library's own values: centres, scales (not log), rotations w x y z, colour bytes r g b a, SH
// as floats, coefficient-major with r g b together (as it hands them to its shaders).
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

globalThis.window = globalThis;   // the library schedules its work through window.setTimeout
const [modulePath, mode, input, output, level, degree] = process.argv.slice(2);
const GS = await import(pathToFileURL(modulePath).href);
const THREE = createRequire(modulePath)('three');
const data = readFileSync(input);
const bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);

if (mode === 'make') {
  const buffer = await GS.PlyLoader.loadFromFileData(bytes, 1, Number(level), true, Number(degree));
  writeFileSync(output, Buffer.from(buffer.bufferData));
} else if (mode === 'read') {
  const sb = new GS.SplatBuffer(bytes, true);
  const n = sb.getSplatCount();
  const deg = sb.getMinSphericalHarmonicsDegree();
  const c = new THREE.Vector3(), s = new THREE.Vector3(), q = new THREE.Quaternion();
  const col = new THREE.Vector4();
  const out = { n, degree: deg, centers: [], scales: [], rotations: [], colors: [], sh: [] };
  for (let i = 0; i < n; i++) {
    sb.getSplatCenter(i, c); out.centers.push(c.x, c.y, c.z);
    sb.getSplatScaleAndRotation(i, s, q);
    out.scales.push(s.x, s.y, s.z); out.rotations.push(q.w, q.x, q.y, q.z);
    sb.getSplatColor(i, col); out.colors.push(col.x, col.y, col.z, col.w);
  }
  const k = [0, 9, 24][deg];
  if (k) {
    const sh = new Float32Array(n * k);
    sb.fillSphericalHarmonicsArray(sh, deg, undefined, 0, n - 1, 0, 0);
    // level 2 comes out as its bytes (the library converts only between levels 0 and 1)
    const lo = sb.minSphericalHarmonicsCoeff, hi = sb.maxSphericalHarmonicsCoeff;
    out.sh = Array.from(sh, (v) => (sb.compressionLevel === 2 ? v / 255 * (hi - lo) + lo : v));
  }
  writeFileSync(output, JSON.stringify(out));
} else {
  throw new Error(`unknown mode ${mode}`);
}
