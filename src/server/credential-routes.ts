// The admin's routes for host and reader tokens. Admin-only by the route policy's default (they
// declare no access). The token is in the answer to its POST and nowhere else, ever.
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { CredentialKind, CredentialStore } from '../store/index.ts';
import type { Authenticator } from './auth.ts';
import {
  CREDENTIAL_NAME_PATTERN,
  apiCredential,
  existsMessage,
  issueToken,
  noTokenMessage,
} from './credentials.ts';
import { apiError } from './errors.ts';

const credential = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'name', 'createdAt', 'revokedAt'],
  properties: {
    kind: { type: 'string', enum: ['host', 'reader'] },
    name: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    revokedAt: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

const issued = {
  ...credential,
  required: [...credential.required, 'token'],
  properties: { ...credential.properties, token: { type: 'string' } },
} as const;

const error = {
  type: 'object',
  required: ['error', 'message'],
  properties: { error: { type: 'string' }, message: { type: 'string' } },
} as const;

function nameParams(param: string) {
  return {
    type: 'object',
    required: [param],
    properties: { [param]: { type: 'string', pattern: CREDENTIAL_NAME_PATTERN } },
  } as const;
}

const ROUTES: readonly { kind: CredentialKind; path: string; param: string }[] = [
  { kind: 'host', path: '/v1/hosts/:host/token', param: 'host' },
  { kind: 'reader', path: '/v1/readers/:name/token', param: 'name' },
];

export async function credentialRoutes(
  app: FastifyInstance,
  store: CredentialStore,
  authenticator: Authenticator,
): Promise<void> {
  for (const { kind, path, param } of ROUTES) {
    app.post<{ Params: Record<string, string>; Querystring: { replace?: boolean } }>(
      path,
      {
        schema: {
          summary: `Issue a ${kind} token (shown in this answer only; only its hash is kept)`,
          tags: ['credentials'],
          params: nameParams(param),
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              replace: {
                type: 'boolean',
                description: 'revoke the valid token, if any, in the same step',
              },
            },
          },
          response: { 201: issued, 409: error },
        },
      },
      async (request, reply) => {
        const name = request.params[param]!;
        const result = await issueToken(store, kind, name, request.query.replace === true);
        if (!result.ok) return send(reply, 409, 'credential-exists', existsMessage(result.current));
        // The old token, if replaced, must stop working on this replica at once.
        authenticator.forget();
        return reply
          .code(201)
          .header('cache-control', 'no-store')
          .send({ ...apiCredential(result.credential), token: result.token });
      },
    );

    app.delete<{ Params: Record<string, string> }>(
      path,
      {
        schema: {
          summary: `Revoke a ${kind}'s token (within a few seconds on every replica)`,
          tags: ['credentials'],
          params: nameParams(param),
          response: { 200: credential, 404: error },
        },
      },
      async (request, reply) => {
        const name = request.params[param]!;
        const revoked = await store.revokeCredential(kind, name);
        if (revoked === null) return send(reply, 404, 'not-found', noTokenMessage(kind, name));
        authenticator.forget();
        return apiCredential(revoked);
      },
    );
  }

  app.get(
    '/v1/credentials',
    {
      schema: {
        summary: 'Every host and reader credential, valid and revoked (never the tokens)',
        tags: ['credentials'],
        response: {
          200: {
            type: 'object',
            required: ['credentials'],
            properties: { credentials: { type: 'array', items: credential } },
          },
        },
      },
    },
    async () => ({ credentials: (await store.listCredentials()).map(apiCredential) }),
  );
}

function send(
  reply: FastifyReply,
  status: number,
  code: 'credential-exists' | 'not-found',
  message: string,
): FastifyReply {
  return reply.code(status).send(apiError(code, message));
}
