/**
 * A TCP connection on 127.0.0.1 with raw file descriptors, made through
 * libc: the feature probes put both ends into a sockmap and measure what
 * the kernel does with redirected bytes (Node's sockets hide their fds and
 * read eagerly, which would hide exactly what is measured).
 */
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const uint8_t *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  getsockname: libc.func('int getsockname(int fd, _Inout_ uint8_t *addr, _Inout_ uint32_t *len)'),
  connect: libc.func('int connect(int fd, const uint8_t *addr, uint32_t len)'),
  accept: libc.func('int accept(int fd, void *addr, void *len)'),
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, uintptr_t len, int flags)'),
  recv: libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, uintptr_t len, int flags)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, _Out_ uint8_t *val, _Inout_ uint32_t *len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long req, _Out_ int *arg)'),
  close: libc.func('int close(int fd)'),
};

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_MEMINFO = 55;
const FIONREAD = 0x541b;
export const MSG_DONTWAIT = 0x40;

function ok(what: string, rc: number): number {
  if (rc < 0) throw new Error(`${what}: errno ${koffi.errno()}`);
  return rc;
}

function sockaddrIn(port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.set([127, 0, 0, 1], 4);
  return b;
}

export interface LoopbackPair {
  client: number;
  server: number;
  close(): void;
}

/** A connected pair on 127.0.0.1 (blocking sockets, 1 s receive timeout so nothing can hang). */
export function loopbackPair(): LoopbackPair {
  const fds: number[] = [];
  try {
    const lfd = ok('socket', c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) as number);
    fds.push(lfd);
    ok('bind', c.bind(lfd, sockaddrIn(0), 16) as number);
    ok('listen', c.listen(lfd, 1) as number);
    const addr = Buffer.alloc(16);
    ok('getsockname', c.getsockname(lfd, addr, [16]) as number);
    const client = ok('socket', c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) as number);
    fds.push(client);
    ok('connect', c.connect(client, sockaddrIn(addr.readUInt16BE(2)), 16) as number);
    const server = ok('accept', c.accept(lfd, null, null) as number);
    fds.push(server);
    c.close(lfd);
    fds.shift();
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(1n, 0);
    for (const fd of [client, server]) ok('setsockopt', c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) as number);
    return { client, server, close: () => [client, server].forEach((fd) => c.close(fd)) };
  } catch (err) {
    for (const fd of fds) c.close(fd);
    throw err;
  }
}

export function sendBytes(fd: number, n: number): number {
  return ok('send', Number(c.send(fd, Buffer.alloc(n, 0x61), n, 0)));
}

/** Bytes read (0 at EOF); -errno when nothing could be read (EAGAIN with MSG_DONTWAIT or after the timeout). */
export function recvBytes(fd: number, n: number, flags = 0): number {
  const rc = Number(c.recv(fd, Buffer.alloc(n), n, flags));
  return rc < 0 ? -koffi.errno() : rc;
}

/** sk_rmem_alloc of the socket (SO_MEMINFO, SK_MEMINFO_RMEM_ALLOC). */
export function rmemAlloc(fd: number): number {
  const b = Buffer.alloc(9 * 4);
  ok('getsockopt SO_MEMINFO', c.getsockopt(fd, SOL_SOCKET, SO_MEMINFO, b, [b.length]) as number);
  return b.readUInt32LE(0);
}

/** What ioctl(FIONREAD) says is readable. */
export function fionread(fd: number): number {
  const out = [0];
  ok('ioctl FIONREAD', c.ioctl(fd, FIONREAD, out) as number);
  return out[0] ?? 0;
}
