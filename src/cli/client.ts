// The API client moved to src/client; kept so that imports of this path keep working.
export * from '../client/index.ts';
