export {
  LibvirtClient,
  ListDomainsFlags,
  type CloseReason,
  type ConnectOptions,
  type DomainStateInfo,
  type DomainStatesListing,
  type DomainWithState,
  type LifecycleEventMessage,
  type RebootEventMessage,
} from './client.ts';
export * from './enums.ts';
export * from './errors.ts';
export { type Domain } from './remote.ts';
export { DEFAULT_URI, resolveUri, type Endpoint, type ResolvedUri } from './uri.ts';
