/** How the service mounts the emulators. */
export interface SandboxOptions {
  serveHttp: boolean;
  /**
   * The service's own base URL. Where a provider sends webhooks to a URL configured in its
   * dashboard (Cobo, Lean), the emulators use `<webhookBaseUrl>/webhooks/<provider>` unless a
   * fault setting overrides it; without it they send none.
   */
  webhookBaseUrl?: string;
}

export const SANDBOX_OPTIONS = Symbol('SANDBOX_OPTIONS');
