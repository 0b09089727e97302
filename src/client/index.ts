// The HTTP client of API v1: the CLI's commands, a host's agent and scripts speak through it.
export * from './client.ts';
