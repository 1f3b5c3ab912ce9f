// farm bench (check.sh): planted nondeterminism. Prepended to a copy of the
// example's vite.config.js, it writes one small file per source of
// variation into public/, which Vite copies into dist/, so a reproducibility
// audit that sees the variation reports that file as differing.
import fs from 'node:fs';
import os from 'node:os';

// The order the file system returns entries in (readdirSync would sort them).
function rawListing(dir) {
  const names = [];
  const d = fs.opendirSync(dir);
  for (let e = d.readSync(); e !== null; e = d.readSync()) names.push(e.name);
  d.closeSync();
  return names.join(' ');
}

const farmBenchPlants = {
  random: Math.random(),
  'clock-day': new Date().toISOString().slice(0, 10),
  cpus: os.availableParallelism(),
  umask: process.umask().toString(8),
  'build-path': process.cwd(),
  hostname: os.hostname(),
  home: os.homedir(),
  timezone: new Date().getTimezoneOffset(),
  locale: `${process.env.LANG ?? ''} ${process.env.LC_ALL ?? ''}`,
  environment: Object.keys(process.env).sort().join(' '),
  'readdir-order': rawListing('node_modules'),
};
fs.mkdirSync('public', { recursive: true });
for (const [name, value] of Object.entries(farmBenchPlants)) {
  fs.writeFileSync(`public/plant-${name}.txt`, `${value}\n`);
}
