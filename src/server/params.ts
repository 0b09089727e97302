// Query parameters and headers arrive as text. The schema's own type coercion would read
// "Infinity", "1e400", "0x10", "1e3" and " 5" as numbers, so the server turns off coercion and
// reads the parameters a route's schema declares as integer or boolean here, strictly: an
// integer is plain decimal digits within the schema's range, a boolean is `true` or `false`.
import type { FastifyRequest, FastifySchema } from 'fastify';
import { RequestRefused, describePart, quote } from './errors.ts';

interface ParameterRule {
  readonly part: 'querystring' | 'headers';
  readonly name: string;
  readonly kind: 'integer' | 'boolean';
  readonly minimum: number;
  readonly maximum: number;
}

const DECIMAL = /^[0-9]+$/;
const rulesBySchema = new WeakMap<FastifySchema, readonly ParameterRule[]>();

function rulesOf(schema: FastifySchema): readonly ParameterRule[] {
  let rules = rulesBySchema.get(schema);
  if (rules === undefined) {
    rules = [...partRules(schema, 'querystring'), ...partRules(schema, 'headers')];
    rulesBySchema.set(schema, rules);
  }
  return rules;
}

function partRules(schema: FastifySchema, part: 'querystring' | 'headers'): ParameterRule[] {
  const properties = (schema[part] as { properties?: Record<string, unknown> } | undefined)
    ?.properties;
  if (properties === undefined) return [];
  const rules: ParameterRule[] = [];
  for (const [name, property] of Object.entries(properties)) {
    const { type, minimum, maximum } = property as {
      type?: unknown;
      minimum?: number;
      maximum?: number;
    };
    if (type !== 'integer' && type !== 'boolean') continue;
    rules.push({
      part,
      name,
      kind: type,
      minimum: minimum ?? 0,
      maximum: maximum ?? Number.MAX_SAFE_INTEGER,
    });
  }
  return rules;
}

/** Throws RequestRefused for a malformed query string or a declared parameter spelled wrong. */
export function parseParameters(request: FastifyRequest): void {
  checkPercentEncoding(request.url);
  const schema = request.routeOptions.schema;
  if (schema === undefined) return;
  for (const rule of rulesOf(schema)) {
    const values = (rule.part === 'querystring' ? request.query : request.headers) as Record<
      string,
      unknown
    >;
    const text = values[rule.name];
    if (text === undefined) continue;
    // An empty Last-Event-ID is how SSE says "no event seen yet".
    if (rule.part === 'headers' && text === '') delete values[rule.name];
    else values[rule.name] = parseValue(rule, text);
  }
}

function parseValue(rule: ParameterRule, text: unknown): number | boolean {
  const named = `${describePart(rule.part)} '${rule.name}'`;
  if (typeof text !== 'string') throw new RequestRefused('invalid-request', `${named} given twice`);
  if (rule.kind === 'boolean') {
    if (text === 'true' || text === 'false') return text === 'true';
    throw new RequestRefused(
      'invalid-request',
      `${named} must be true or false; got ${quote(text)}`,
    );
  }
  const value = DECIMAL.test(text) ? Number(text) : Number.NaN;
  if (Number.isSafeInteger(value) && value >= rule.minimum && value <= rule.maximum) return value;
  throw new RequestRefused(
    'invalid-request',
    `${named} must be an integer from ${rule.minimum} to ${rule.maximum}, in decimal digits; ` +
      `got ${quote(text)}`,
  );
}

/** The query parser keeps a malformed escape such as `%zz` as text; it is refused instead. */
function checkPercentEncoding(url: string): void {
  const start = url.indexOf('?');
  if (start < 0 || !url.includes('%', start)) return;
  for (const piece of url.slice(start + 1).split('&')) {
    try {
      decodeURIComponent(piece);
    } catch {
      throw new RequestRefused(
        'bad-request',
        `the query string has a malformed percent-escape in ${quote(piece)}`,
      );
    }
  }
}
