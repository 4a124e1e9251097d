/**
 * values.schema.json (JSON Schema draft-07, what helm checks values against
 * before it renders): the defaults pass, it describes every value, and bad
 * values are refused with a message naming the field, by ajv here and by
 * deploy/render.ts (which validates as helm does).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { MAX_STATE_BYTES } from '@meshlane/proto';
import { CHART_DIR, MANIFEST_VALUES, loadValues, mergeValues, renderChart, schemaErrors } from '../../deploy/render.js';

const schema = JSON.parse(readFileSync(join(CHART_DIR, 'values.schema.json'), 'utf8')) as Record<string, unknown>;
const defaults = loadValues();
const errorsWith = (over: Record<string, unknown>) => schemaErrors(mergeValues(defaults, over));

type S = { $ref?: string; type?: string; properties?: Record<string, S>; additionalProperties?: boolean | S; required?: string[]; oneOf?: S[]; anyOf?: S[]; minimum?: number; enum?: unknown[] };
function deref(s: S): S {
  if (!s.$ref) return s;
  const name = s.$ref.replace('#/definitions/', '');
  return deref((schema.definitions as Record<string, S>)[name] as S);
}

describe('values.schema.json', () => {
  it('is draft-07 and the default values (and the manifests\' values) meet it', () => {
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schemaErrors(defaults)).toEqual([]);
    expect(errorsWith(MANIFEST_VALUES)).toEqual([]);
  });

  it('describes every value of values.yaml, with a type, and closes every object it can', () => {
    const walk = (v: unknown, s: S, path: string): void => {
      const d = deref(s);
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        expect(d.type, `${path}: type`).toBe('object');
        if (d.properties) {
          expect(d.additionalProperties, `${path}: additionalProperties`).toBe(false);
          for (const [k, sub] of Object.entries(v)) {
            expect(d.properties[k], `${path}.${k} is not in the schema`).toBeDefined();
            walk(sub, d.properties[k] as S, `${path}.${k}`);
          }
          // Every value the templates need is required (storageClassName is optional, and so are resource names).
          if (d.required) expect([...d.required].sort(), `${path}: required`).toEqual(Object.keys(v).sort());
          else expect(path, 'an object without required values').toMatch(/\.resources\.(requests|limits)$/);
        } else expect(typeof d.additionalProperties, `${path}: a map of what`).toBe('object');
      } else expect(d.type ?? d.oneOf ?? d.anyOf, `${path}: no type`).toBeDefined();
    };
    walk(defaults, schema as S, 'values');
    expect(deref((((schema.properties as Record<string, S>).nats as S).properties?.storage as S).properties?.storageClassName as S).type).toBe('string');
  });

  it('bounds max_payload by a node state: minimum MAX_STATE_BYTES (proto/src/nodestate.ts), maximum nats-server\'s 64 MiB', () => {
    const mp = ((schema.properties as Record<string, S>).nats as S).properties?.maxPayload as S;
    expect(mp.minimum).toBe(MAX_STATE_BYTES);
    expect(defaults.nats && (defaults.nats as Record<string, unknown>).maxPayload).toBeGreaterThanOrEqual(MAX_STATE_BYTES);
    expect(errorsWith({ nats: { maxPayload: MAX_STATE_BYTES - 1 } })).toEqual([`nats.maxPayload: must be >= ${MAX_STATE_BYTES}`]);
    expect(errorsWith({ nats: { maxPayload: 64 * 1024 * 1024 + 1 } })).toEqual(['nats.maxPayload: must be <= 67108864']);
  });

  it('refuses bad values, naming the field', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ nats: { replicas: 2 } }, 'nats.replicas: must be equal to one of the allowed values (1, 3, 5)'],
      [{ nats: { replicas: '3' } }, 'nats.replicas: must be integer'],
      [{ nats: { tls: { source: 'cert-manager' } } }, 'nats.tls.source: must be equal to one of the allowed values (generate, existing)'],
      [{ nats: { storage: { size: '10 GB' } } }, 'nats.storage.size: must match pattern'],
      [{ nats: { storage: { storageClassName: 'Fast_SSD' } } }, 'nats.storage.storageClassName: must match pattern'],
      [{ nats: { storageClassName: 'fast' } }, 'nats: must NOT have additional properties (storageClassName)'],
      [{ controlplane: { replicas: 0 } }, 'controlplane.replicas: must be >= 1'],
      [{ controlplane: { metricsPort: 70000 } }, 'controlplane.metricsPort: must be <= 65535'],
      [{ controlplane: { nodeSelector: { 'kubernetes.io/os': 'windows' } } }, 'controlplane.nodeSelector: property name must be valid'],
      [{ worker: { capabilities: ['SYS_PTRACE'] } }, 'worker.capabilities.0: must be equal to one of the allowed values'],
      [{ worker: { maxPods: 'lots' } }, 'worker.maxPods: must match exactly one schema in oneOf'],
      [{ worker: { namespace: 'Meshlane' } }, 'worker.namespace: must match pattern'],
      [{ worker: { image: 'ghcr.io/meshlane/worker:latest tag' } }, 'worker.image: must match pattern'],
      [{ worker: { uninstallHook: { enabled: 'yes' } } }, 'worker.uninstallHook.enabled: must be boolean'],
      [{ nats: { tls: { generate: { certDays: 1 } } } }, 'nats.tls.generate.certDays: must be >= 7'],
      [{ extra: 1 }, '(root): must NOT have additional properties (extra)'],
    ];
    for (const [over, msg] of cases) {
      const errs = errorsWith(over);
      expect(errs.some((e) => e.startsWith(msg)), `${JSON.stringify(over)}: ${errs.join('; ')}`).toBe(true);
    }
    // What must pass: a registry with a port and a digest, global (helm passes it to a subchart), maxPods a number.
    expect(errorsWith({ worker: { image: 'registry.local:5000/mesh/worker:0.1.0@sha256:' + 'a'.repeat(64), maxPods: 250 }, global: { any: 1 } })).toEqual([]);
    // A required value removed (null deletes a key, as in helm).
    expect(errorsWith({ nats: { tls: { secretName: null } } })).toEqual(["nats.tls: must have required property 'secretName'"]);
  });

  it('is checked by render.ts before it renders, as helm does', () => {
    expect(() => renderChart({ values: { ...MANIFEST_VALUES, nats: { replicas: 4 } } })).toThrow(/values don't meet the schema \(values\.schema\.json\):\n {2}nats\.replicas: must be equal to one of the allowed values \(1, 3, 5\)/);
  });
});
