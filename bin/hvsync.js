#!/usr/bin/env node
// The installed command: runs the compiled CLI (`npm run build`, which `npm install` runs too).
try {
  await import('../dist/cli/main.js');
} catch (error) {
  const missing =
    error?.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/cli/main.js');
  if (!missing) throw error;
  process.stderr.write('hvsync: the compiled CLI is missing (dist/): run npm run build\n');
  process.exitCode = 1;
}
