// REST calls to the hub (same origin, the session cookie). Errors are the hub's JSON errors.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly position: number | null = null,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

interface ErrorBody {
  error?: { code?: string; message?: string; position?: number };
}

/** Called whenever the hub's application answered (any status below 500): the hub is up. */
let onAnswered: (() => void) | null = null;
export function setAnsweredHandler(fn: () => void): void {
  onAnswered = fn;
}

/** Called on any 401, so the shell can show the login view. */
let onUnauthorized: (() => void) | null = null;
export function setUnauthorizedHandler(fn: () => void): void {
  onUnauthorized = fn;
}

export async function api<T>(method: string, path: string, body?: unknown, opts: { quiet401?: boolean } = {}): Promise<T> {
  const init: RequestInit = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["Content-Type"] = "application/json";
  }
  let response: Response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network", `the hub is unreachable (${String(error)})`);
  }
  if (response.status < 500 && onAnswered) onAnswered();  // a 502/503 may be a proxy with no hub behind it
  if (response.status === 204) return undefined as T;
  let payload: unknown = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const err = (payload as ErrorBody | null)?.error;
    if (response.status === 401 && !opts.quiet401 && onUnauthorized) onUnauthorized();
    throw new ApiError(response.status, err?.code ?? `http_${response.status}`, err?.message ?? response.statusText,
      typeof err?.position === "number" ? err.position : null);
  }
  return payload as T;
}

export const get = <T>(path: string, opts?: { quiet401?: boolean }) => api<T>("GET", path, undefined, opts);
export const post = <T>(path: string, body?: unknown, opts?: { quiet401?: boolean }) => api<T>("POST", path, body ?? {}, opts);
export const put = <T>(path: string, body: unknown) => api<T>("PUT", path, body);
export const del = <T>(path: string) => api<T>("DELETE", path);

export function query(params: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}
