/**
 * Transport security and per-stream metadata for istiod: plaintext (15010) or
 * TLS (15012) verified against istio's root cert, plus the service-account
 * token (audience istio-ca) as "authorization: Bearer". The token file is
 * re-read for every stream, since the kubelet rotates projected tokens.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

export interface TransportOptions {
  /** Use 15010 without TLS. Recent istiod refuses istio.io/debug/* to unauthenticated clients. */
  plaintext?: boolean;
  /** PEM root cert (istio-ca-root-cert ConfigMap, root-cert.pem). Required unless plaintext. */
  caFile?: string;
  /** Projected SA token file of audience istio-ca. */
  tokenFile?: string;
  /** TLS name to verify, when the address is not a name in istiod's certificate (default istiod.istio-system.svc). */
  tlsServerName?: string;
}

export function channelCredentials(o: TransportOptions): grpc.ChannelCredentials {
  if (o.plaintext) return grpc.credentials.createInsecure();
  if (!o.caFile) throw new Error('istiod TLS needs caFile (istio-ca-root-cert root-cert.pem)');
  return grpc.credentials.createSsl(readFileSync(o.caFile));
}

export function channelOptions(o: TransportOptions): grpc.ChannelOptions {
  const opts: grpc.ChannelOptions = {
    // syncz carries every proxy with its metadata: far beyond gRPC's 4 MiB default in big meshes.
    'grpc.max_receive_message_length': 256 * 1024 * 1024,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  };
  if (!o.plaintext && o.tlsServerName) opts['grpc.ssl_target_name_override'] = o.tlsServerName;
  return opts;
}

/** Fresh call metadata; reads the token file now. */
export function callMetadata(o: TransportOptions, clusterId?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (o.tokenFile) {
    const token = readFileSync(o.tokenFile, 'utf8').trim();
    if (token) md.set('authorization', `Bearer ${token}`);
  }
  // istiod's JWT authenticator picks the cluster to review the token against from this header.
  if (clusterId) md.set('clusterid', clusterId);
  return md;
}
