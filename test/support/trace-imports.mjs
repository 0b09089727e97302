// `node --import ./test/support/trace-imports.mjs ...` appends every module URL the program
// resolves to the file named by $HVSYNC_TRACE_IMPORTS: what a command loads, seen from outside.
import { appendFileSync } from 'node:fs';
import { register } from 'node:module';
import { isMainThread } from 'node:worker_threads';

// This file is also the hooks module, which Node loads again on its hooks thread.
if (isMainThread) register(import.meta.url);

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  appendFileSync(process.env.HVSYNC_TRACE_IMPORTS, `${resolved.url}\n`);
  return resolved;
}
