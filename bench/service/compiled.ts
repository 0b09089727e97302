// The cost-at-rest contenders run as plain JavaScript, without the TypeScript loader: hvsync's rows
// from the compiled build (dist/), as users run it, and the contender script itself compiled here.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(ROOT, 'src');
export const DIST = join(ROOT, 'dist');
/** Inside node_modules so that the compiled contender resolves packages (pino) as the repo does. */
const OUT = join(ROOT, 'node_modules', '.cache', 'hvsync-bench');
const CONTENDER_SOURCES = ['contender.ts', 'contender-messages.ts'];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Fails unless every source file has a compiled counterpart at least as new as itself. */
export function assertBuildCurrent(): void {
  for (const source of sourceFiles(SRC)) {
    const compiled = join(DIST, relative(SRC, source)).replace(/\.ts$/, '.js');
    let compiledAt: number;
    try {
      compiledAt = statSync(compiled).mtimeMs;
    } catch {
      throw new Error(
        `the compiled build is missing ${relative(ROOT, compiled)}: run npm run build`,
      );
    }
    if (statSync(source).mtimeMs > compiledAt) {
      throw new Error(`dist/ is older than ${relative(ROOT, source)}: run npm run build`);
    }
  }
}

/** Compiles the contender script to JavaScript and returns the path `node` runs. */
export function compileContender(): string {
  mkdirSync(OUT, { recursive: true });
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const name of CONTENDER_SOURCES) {
    const { outputText } = ts.transpileModule(readFileSync(join(here, name), 'utf8'), {
      fileName: name,
      compilerOptions: {
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.NodeNext,
        verbatimModuleSyntax: true,
        rewriteRelativeImportExtensions: true,
      },
    });
    writeFileSync(join(OUT, name.replace(/\.ts$/, '.js')), outputText);
  }
  return join(OUT, 'contender.js');
}
