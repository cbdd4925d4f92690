/**
 * A readiness answer in the one shape the API's and the workers' /readyz share: each check by name
 * (`control`, `cluster:<name>`), 'ok' or why not, and ready only when every one is 'ok'.
 */
export interface Readiness {
  readonly ready: boolean;
  /** 'ok', or why not (at most 300 characters: an error's message, never a stack). */
  readonly checks: Readonly<Record<string, string>>;
}

/** Runs every check at once; a check fails by rejecting, with a message fit to show. */
export async function checkReadiness(
  probes: Readonly<Record<string, () => Promise<unknown>>>,
): Promise<Readiness> {
  const checks = Object.fromEntries(
    await Promise.all(
      Object.entries(probes).map(async ([name, probe]) => {
        const outcome = await probe().then(
          () => 'ok',
          (error: Error) => error.message.slice(0, 300),
        );
        return [name, outcome] as const;
      }),
    ),
  );
  return { ready: Object.values(checks).every((check) => check === 'ok'), checks };
}
