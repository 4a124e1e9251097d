/** Bounded waiting for a condition: every wait in the suites has a deadline and says what it waited for. */
export async function waitFor(what: string, pred: () => boolean, ms = 10000, everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
