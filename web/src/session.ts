// The API client of this tab: same origin, with the bearer token kept for the tab's session only
// (sessionStorage: gone when the tab closes, never shared with other tabs or sent anywhere else).
import { ApiClient, fetchTransport } from '../../src/client/index.ts';

const TOKEN_KEY = 'hvsync.token';

export function storedToken(): string | undefined {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

export function storeToken(token: string | undefined): void {
  try {
    if (token === undefined) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage turned off: the token lives as long as the page.
  }
}

export function clientFor(token: string | undefined): ApiClient {
  return new ApiClient({ server: location.origin, token, transport: fetchTransport });
}
