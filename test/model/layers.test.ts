// Dependencies stay one-way: the model imports nothing of the project, and the store knows
// nothing of hypervisors. Read from the sources, so a new import that breaks it fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

/** Every relative import of each file in one src/ directory, as written. */
function importsOf(dir: string): { file: string; from: string }[] {
  const found: { file: string; from: string }[] = [];
  for (const file of readdirSync(`${src}${dir}`).filter((name) => name.endsWith('.ts'))) {
    const text = readFileSync(`${src}${dir}/${file}`, 'utf8');
    for (const match of text.matchAll(/\bfrom\s+'(\.[^']*)'/g)) {
      found.push({ file: `${dir}/${file}`, from: match[1]! });
    }
  }
  return found;
}

test('src/model imports only its own files', () => {
  const outside = importsOf('model').filter(({ from }) => !from.startsWith('./'));
  assert.deepEqual(outside, []);
});

test('src/store does not import the hypervisor layers', () => {
  const bad = importsOf('store').filter(({ from }) => /\.\.\/(virt|libvirt|sync)\//.test(from));
  assert.deepEqual(bad, []);
});

test('src/client runs in a browser: no Node modules, and only types from the server', () => {
  const bad: string[] = [];
  for (const file of readdirSync(`${src}client`).filter((name) => name.endsWith('.ts'))) {
    const text = readFileSync(`${src}client/${file}`, 'utf8');
    for (const match of text.matchAll(/^import\s+(type\s+)?[^;]*?from\s+'([^']*)'/gms)) {
      const [, typeOnly, from] = match;
      if (from!.startsWith('node:') || !from!.startsWith('.')) bad.push(`${file}: ${from}`);
      if (from!.startsWith('../') && !from!.startsWith('../model/') && typeOnly === undefined) {
        bad.push(`${file}: ${from} (values)`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('web/ reaches the rest only through src/client and src/model (and server wire types)', () => {
  const web = fileURLToPath(new URL('../../web/src/', import.meta.url));
  const bad: string[] = [];
  const visit = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) {
        visit(`${dir}${entry.name}/`);
        continue;
      }
      if (!/\.tsx?$/.test(entry.name)) continue;
      const text = readFileSync(`${dir}${entry.name}`, 'utf8');
      for (const match of text.matchAll(/^import\s+(type\s+)?[^;]*?from\s+'([^']*)'/gms)) {
        const [, typeOnly, from] = match;
        const layer = /\/src\/([a-z]+)\//.exec(from!)?.[1];
        if (layer === undefined || layer === 'client' || layer === 'model') continue;
        if (layer === 'server' && typeOnly !== undefined) continue;
        bad.push(`${entry.name}: ${from}`);
      }
    }
  };
  visit(web);
  assert.deepEqual(bad, []);
});
