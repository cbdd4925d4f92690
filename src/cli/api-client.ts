/**
 * The command line's HTTP client of the slotfleet API: the operator commands and the demo speak to
 * the API through it, and never to Redis.
 */
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { MigrationView } from './migration-view.js';

export interface ApiResponse {
  readonly status: number;
  /** The parsed JSON body, or null when there was none. */
  readonly body: unknown;
}

/** An answer other than the one a command needed, with the API's code when it gave one. */
export class ApiRefusedError extends SlotfleetError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
    this.name = 'ApiRefusedError';
  }
}

const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

export class ApiClient {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string | undefined,
    private readonly fetchFn: typeof fetch = fetch,
  ) {}

  async request(method: 'GET' | 'POST' | 'PATCH', path: string, body?: unknown): Promise<ApiResponse> {
    const response = await this.fetchFn(`${this.baseUrl}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    }).catch((error: Error) => {
      throw new SlotfleetError(
        ErrorCode.Connection,
        `cannot reach the API at ${this.baseUrl} (SLOTFLEET_API_URL): ${error.message}`,
        { cause: error },
      );
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  /** GET /v1/migrations/:id; any answer but 200 throws an ApiRefusedError. */
  async migration(id: string): Promise<MigrationView> {
    const response = await this.request('GET', `/v1/migrations/${encodeURIComponent(id)}`);
    if (response.status !== 200) {
      const { code } = (response.body ?? {}) as { code?: string };
      throw new ApiRefusedError(
        response.status,
        // Not slotfleet's answer (a proxy's, say): the API itself was not reached.
        code !== undefined && KNOWN_CODES.has(code) ? (code as ErrorCode) : ErrorCode.Connection,
        refusalMessage(response),
      );
    }
    return response.body as MigrationView;
  }
}

/** `the API refused (404 NOT_FOUND): no migration abc`, from an error answer of the API. */
export function refusalMessage(response: ApiResponse): string {
  const error = response.body as { message?: string; code?: string } | null;
  return `the API refused (${response.status} ${error?.code ?? ''}): ${error?.message ?? ''}`;
}
