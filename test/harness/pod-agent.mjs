// A client application inside a test pod. Reads JSON commands on stdin, one
// per line, and answers each with one JSON line on stdout. Plain JS so it
// starts fast under any uid without a TypeScript loader.
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

const CHUNK = 64 * 1024;

/** Sends `bytes` of random data, optionally half-closes, and checks the echo byte for byte by hash. */
function xfer({ host, port, bytes, halfClose = true, chunk = CHUNK, pauseMs = 0 }) {
  return new Promise((resolve) => {
    const sent = createHash('sha256');
    const recv = createHash('sha256');
    let sentBytes = 0;
    let recvBytes = 0;
    const started = process.hrtime.bigint();
    const sock = connect({ host, port });
    sock.setNoDelay(true);
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve({
        error,
        sentBytes,
        recvBytes,
        sentSha: sent.digest('hex'),
        recvSha: recv.digest('hex'),
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      });
    };
    const pump = () => {
      while (sentBytes < bytes) {
        const n = Math.min(chunk, bytes - sentBytes);
        const buf = randomBytes(n);
        sent.update(buf);
        sentBytes += n;
        if (!sock.write(buf)) {
          sock.once('drain', pauseMs ? () => setTimeout(pump, pauseMs) : pump);
          return;
        }
        if (pauseMs) {
          setTimeout(pump, pauseMs);
          return;
        }
      }
      if (halfClose) sock.end();
    };
    sock.on('connect', pump);
    sock.on('data', (d) => {
      recv.update(d);
      recvBytes += d.length;
      if (!halfClose && recvBytes >= bytes) finish();
    });
    sock.on('end', () => finish(recvBytes === bytes ? undefined : `EOF after ${recvBytes} of ${bytes} bytes`));
    sock.on('error', (e) => finish(e.code ?? e.message));
    sock.setTimeout(60000, () => finish('timeout'));
  });
}

async function many({ count, ...rest }) {
  const results = await Promise.all(Array.from({ length: count }, () => xfer(rest)));
  return {
    count,
    errors: results.filter((r) => r.error).map((r) => r.error),
    mismatches: results.filter((r) => !r.error && r.sentSha !== r.recvSha).length,
    bytes: results.reduce((a, r) => a + r.recvBytes, 0),
  };
}

/**
 * Half-close against a sink: writes `bytes`, shuts down its write side, then
 * reads the 8-byte count the sink sends only after it has read EOF.
 */
function sink({ host, port, bytes }) {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    let sent = 0;
    const reply = [];
    const pump = () => {
      while (sent < bytes) {
        const n = Math.min(CHUNK, bytes - sent);
        sent += n;
        if (!sock.write(randomBytes(n))) return void sock.once('drain', pump);
      }
      sock.end();
    };
    sock.on('connect', pump);
    sock.on('data', (d) => reply.push(d));
    sock.on('end', () => {
      const buf = Buffer.concat(reply);
      resolve(buf.length === 8 ? { counted: Number(buf.readBigUInt64LE(0)), sent } : { error: `reply of ${buf.length} bytes`, sent });
    });
    sock.on('error', (e) => resolve({ error: e.code ?? e.message, sent }));
  });
}

/** Connects, exchanges some bytes, then aborts with RST. */
function reset({ host, port }) {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    sock.on('connect', () => sock.write(Buffer.alloc(1024, 7)));
    let got = 0;
    sock.on('data', (d) => {
      got += d.length;
      if (got >= 1024) {
        sock.resetAndDestroy();
        resolve({ echoed: got });
      }
    });
    sock.on('error', (e) => resolve({ error: e.code ?? e.message }));
  });
}

const ops = { xfer, many, reset, sink };
const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const { id, op, args } = JSON.parse(line);
  try {
    const result = await ops[op](args);
    process.stdout.write(`${JSON.stringify({ id, result })}\n`);
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ id, error: e.message })}\n`);
  }
});
rl.on('close', () => process.exit(0));
