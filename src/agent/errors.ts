// The agent's one error class.
export type AgentErrorCode =
  /** The journal file cannot be opened or used (another agent holds it, another host's). */
  | 'journal'
  /** The journal is at its bound with nothing left to compact: the observation is refused. */
  | 'journal-full'
  /** The control plane refused a request outright (not an outage): bad token, bad data. */
  | 'refused';

export class AgentError extends Error {
  override readonly name = 'AgentError';
  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
