// The check every non-public request passes before its route: who is asking (auth.ts), and
// whether that principal may call this route (policy.ts). Refusals in the API's error shape.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator } from './auth.ts';
import { apiError } from './errors.ts';
import { answerRefusal, routeRefusal, setPrincipal } from './policy.ts';

/** Resolves the request's principal; answers 401/403/503 itself and returns false when refused. */
export async function admitRequest(
  authenticator: Authenticator,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<boolean> {
  const answer = await authenticator.authenticate(request.headers.authorization);
  if (!answer.ok) {
    if (answer.code === 'unauthorized') reply.header('www-authenticate', 'Bearer realm="hvsync"');
    if (answer.code === 'unavailable') reply.header('retry-after', '1');
    await reply.code(STATUS[answer.code]).send(apiError(answer.code, answer.message));
    return false;
  }
  // A path no route has is answered 404 by the not-found handler, to anyone authenticated.
  if (request.routeOptions.url !== undefined) {
    const refusal = routeRefusal(answer.principal, request);
    if (refusal !== null) {
      await reply.code(403).send(apiError('forbidden', refusal));
      return false;
    }
  }
  setPrincipal(request, answer.principal);
  return true;
}

const STATUS = { unauthorized: 401, forbidden: 403, unavailable: 503 } as const;

/** The answer, or a 403 in its place when a host token would read another host's record. */
export async function screenAnswer(
  request: FastifyRequest,
  reply: FastifyReply,
  answer: unknown,
): Promise<unknown> {
  const refusal = answerRefusal(request, reply.statusCode, answer);
  if (refusal === null) return answer;
  reply.code(403);
  return apiError('forbidden', refusal);
}
