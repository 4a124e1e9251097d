/** A hand-made NodeStateDelta with no changes, for tests that publish past the control plane. */
import { NODE_STATE_API_VERSION } from '@meshlane/proto';

export const rawDelta = (node: string, from: number, to: number) => ({
  apiVersion: NODE_STATE_API_VERSION,
  kind: 'NodeStateDelta',
  node,
  fromGeneration: from,
  toGeneration: to,
  upsertEndpoints: [],
  removeEndpoints: [],
});
