/** A capture setting that cannot be read the way Istio reads it. */
export class CaptureConfigError extends Error {
  constructor(
    readonly source: string,
    readonly value: string,
    readonly detail: string,
  ) {
    super(`${source}: ${JSON.stringify(value)}: ${detail}`);
    this.name = 'CaptureConfigError';
  }
}
