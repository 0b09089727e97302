#!/usr/bin/env node
// Builds the dashboard (web/) into dist/web: one bundled, minified script and stylesheet with
// their content's hash in their names (served as immutable), and index.html naming them (served
// as no-cache). Part of `npm run build`, so `npm install` (prepare) builds it too.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath, URL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const web = join(root, 'web');
const out = join(root, 'dist', 'web');
const assets = join(out, 'assets');

rmSync(out, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const result = await build({
  entryPoints: [join(web, 'src', 'main.tsx')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  platform: 'browser',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  outdir: assets,
  entryNames: '[name]-[hash]',
  sourcemap: 'linked',
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((path) =>
  relative(assets, join(root, path)),
);
const named = (suffix) => {
  const found = outputs.find((name) => name.startsWith('main-') && name.endsWith(suffix));
  if (found === undefined) throw new Error(`the dashboard build made no main-*${suffix}`);
  return found;
};

const icon = readFileSync(join(web, 'icon.svg'));
const iconName = `icon-${createHash('sha256').update(icon).digest('hex').slice(0, 8)}.svg`;
copyFileSync(join(web, 'icon.svg'), join(assets, iconName));

const html = readFileSync(join(web, 'index.html'), 'utf8')
  .replace('{{js}}', named('.js'))
  .replace('{{css}}', named('.css'))
  .replace('{{icon}}', iconName);
writeFileSync(join(out, 'index.html'), html);
console.log(
  `dashboard built into ${relative(root, out)}: ${[named('.js'), named('.css'), basename(iconName)].join(', ')}`,
);
