// The kernel matrix's pieces: which Debian kernel package a short name means,
// fetching and unpacking it into a cache under build/ (never installed: the
// host's /boot, bootloader and /lib/modules are not touched), the initramfs
// (busybox, /init, the modules of modules.txt with their dependencies), and
// booting it under qemu with the host's root shared read-only over 9p.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';

export const HERE = import.meta.dirname;
export const ROOT = resolve(HERE, '../..');
export const BUILD = join(ROOT, 'build/kernel-matrix');
export const CACHE = process.env.MESHLANE_KERNEL_CACHE ?? join(BUILD, 'cache');

/**
 * Short kernel names and the Debian package that names the newest kernel of
 * that series on this machine's apt sources (a meta-package whose Depends is
 * the versioned image). Any exact linux-image-* package name works too, and
 * MESHLANE_KERNEL_PKG_6_12=linux-image-6.12.107+deb12-amd64 pins one.
 * Debian 12's sources have 6.1 (bookworm) and 6.12 (bookworm-security, the
 * backports kernel); no 5.x kernel is in them.
 */
export const KERNELS = {
  '6.1': { meta: 'linux-image-amd64', series: '6.1.' },
  '6.12': { meta: 'linux-image-6.12-amd64', series: '6.12.' },
};

export function log(msg) {
  process.stderr.write(`kernel-matrix: ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${(r.stderr || r.stdout || '').trim().slice(-2000)}`);
  return r.stdout;
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const isRoot = () => process.getuid?.() === 0;
let aptUpdated = false;

/** apt-get as root, one at a time across runners (guests of one matrix start side by side). */
function aptGet(args, opts = {}) {
  return run('flock', ['-w', '600', '/run/lock/meshlane-kernel-matrix.apt', 'apt-get', ...args], { ...opts, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function aptUpdate() {
  if (aptUpdated || !isRoot()) return;
  aptUpdated = true;
  log('apt-get update');
  aptGet(['update', '-qq']);
}

/** qemu-system-x86 from Debian when missing (the only package installed on the host). */
export function ensureQemu() {
  if (have('qemu-system-x86_64')) return;
  if (!isRoot()) throw new Error('qemu-system-x86_64 is missing and this is not root: apt-get install qemu-system-x86');
  aptUpdate();
  log('apt-get install qemu-system-x86');
  aptGet(['install', '-y', '-qq', '--no-install-recommends', 'qemu-system-x86']);
}

function aptDepends(pkg) {
  const out = spawnSync('apt-cache', ['depends', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', pkg], { encoding: 'utf8' });
  return [...(out.stdout ?? '').matchAll(/^\s+Depends: (\S+)/gm)].map((m) => m[1]);
}

function aptVersion(pkg) {
  const out = spawnSync('apt-cache', ['policy', pkg], { encoding: 'utf8' }).stdout ?? '';
  const m = /Candidate: (\S+)/.exec(out);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

/** The versioned linux-image package a name stands for, and its version. */
export function resolveKernel(name) {
  const envPin = process.env[`MESHLANE_KERNEL_PKG_${name.replace(/[^A-Za-z0-9]/g, '_')}`];
  const known = KERNELS[name];
  if (!known && !name.startsWith('linux-image-')) {
    throw new Error(`unknown kernel ${JSON.stringify(name)}: use one of ${Object.keys(KERNELS).join(', ')} or a linux-image-* package name`);
  }
  const lookup = () => {
    if (envPin) return envPin;
    if (!known) return name;
    return aptDepends(known.meta).find((p) => /^linux-image-\d/.test(p));
  };
  let pkg = lookup();
  let version = pkg && aptVersion(pkg);
  if (!version) {
    aptUpdate();
    pkg = lookup();
    version = pkg && aptVersion(pkg);
  }
  if (!pkg || !version) {
    // Offline: the newest kernel of that series already in the cache.
    const cached = existsSync(CACHE)
      ? readdirSync(CACHE)
          .filter((d) => existsSync(join(CACHE, d, '.complete')) && (known ? d.startsWith(`linux-image-${known.series}`) : d.startsWith(`${name}_`)))
          .sort()
      : [];
    const last = cached.at(-1);
    if (!last) throw new Error(`kernel ${name}: no package found through apt (${known ? known.meta : name}) and none cached in ${CACHE}`);
    log(`kernel ${name}: apt has no candidate; using the cached ${last}`);
    const [p, v] = last.split('_');
    return { name, pkg: p, version: v, dir: join(CACHE, last) };
  }
  return { name, pkg, version, dir: join(CACHE, `${pkg}_${version}`) };
}

/** Downloads and unpacks the package into the cache once; returns vmlinuz and the modules folder. */
export function fetchKernel(k) {
  if (!existsSync(join(k.dir, '.complete'))) {
    const tmp = `${k.dir}.tmp${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    log(`apt-get download ${k.pkg}=${k.version}`);
    const t0 = Date.now();
    run('apt-get', ['download', `${k.pkg}=${k.version}`], { cwd: tmp });
    const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${k.pkg}: no .deb`);
    run('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'root')]);
    rmSync(join(tmp, deb));
    writeFileSync(join(tmp, '.complete'), `${k.pkg} ${k.version}\n`);
    rmSync(k.dir, { recursive: true, force: true });
    renameSync(tmp, k.dir);
    log(`unpacked ${k.pkg} in ${((Date.now() - t0) / 1000).toFixed(1)} s into ${relative(ROOT, k.dir)}`);
  }
  const root = join(k.dir, 'root');
  const vmlinuz = readdirSync(join(root, 'boot')).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error(`${k.pkg}: no boot/vmlinuz-*`);
  const release = vmlinuz.slice('vmlinuz-'.length);
  const modules = [join(root, 'lib/modules', release), join(root, 'usr/lib/modules', release)].find((d) => existsSync(d));
  if (!modules) throw new Error(`${k.pkg}: no modules for ${release}`);
  return { ...k, release, vmlinuz: join(root, 'boot', vmlinuz), modules };
}

// ---- modules ----------------------------------------------------------------

const norm = (n) => n.replace(/-/g, '_');
const modName = (file) => norm(file.replace(/\.ko(\.(xz|zst|gz))?$/, ''));

function walk(dir, out = []) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) out.push(p);
  }
  return out;
}

function readModule(file) {
  if (file.endsWith('.ko')) return readFileSync(file);
  if (file.endsWith('.xz')) return execFileSync('xz', ['-dc', file], { maxBuffer: 256 << 20 });
  if (file.endsWith('.zst')) return execFileSync('zstd', ['-dcq', file], { maxBuffer: 256 << 20 });
  return gunzipSync(readFileSync(file));
}

/** key=value strings of an ELF64 module's .modinfo section. */
function modinfo(elf) {
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const sec = (i) => {
    const o = shoff + i * shentsize;
    return { name: elf.readUInt32LE(o), offset: Number(elf.readBigUInt64LE(o + 24)), size: Number(elf.readBigUInt64LE(o + 32)) };
  };
  const strtab = sec(shstrndx);
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const nameEnd = elf.indexOf(0, strtab.offset + s.name);
    if (elf.toString('latin1', strtab.offset + s.name, nameEnd) !== '.modinfo') continue;
    const info = {};
    for (const kv of elf.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq > 0) (info[kv.slice(0, eq)] ??= []).push(kv.slice(eq + 1));
    }
    return info;
  }
  return {};
}

/**
 * The modules of modules.txt and everything they depend on, in load order,
 * decompressed. Built-in ones are skipped; unknown ones are reported.
 */
export function resolveModules(modulesDir, wanted) {
  const builtin = new Set(
    readFileSync(join(modulesDir, 'modules.builtin'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => modName(l.split('/').at(-1))),
  );
  const files = new Map(walk(join(modulesDir, 'kernel')).map((f) => [modName(f.split('/').at(-1)), f]));
  const order = [];
  const seen = new Set();
  const report = { loaded: [], builtin: [], missing: [], softdepsUnresolved: [] };
  const visit = (name, root) => {
    name = norm(name);
    if (seen.has(name)) return;
    seen.add(name);
    if (builtin.has(name)) {
      if (root) report.builtin.push(name);
      return;
    }
    const file = files.get(name);
    if (!file) {
      report.missing.push(name);
      return;
    }
    const data = readModule(file);
    const info = modinfo(data);
    for (const dep of (info.depends?.[0] ?? '').split(',').filter(Boolean)) visit(dep, false);
    for (const sd of info.softdep ?? []) {
      const pre = /pre:\s*([^:]*?)(\s+post:|$)/.exec(sd)?.[1] ?? '';
      for (const dep of pre.split(/\s+/).filter(Boolean)) {
        // A softdep may name an alias ("crc32c" for libcrc32c): the module
        // of that name, else its generic implementation (crc32c_generic).
        const n = norm(dep);
        const found = [n, `${n}_generic`].find((c) => files.has(c) || builtin.has(c));
        if (found) visit(found, false);
        else report.softdepsUnresolved.push(`${name}: ${dep}`);
      }
    }
    order.push({ name, data });
    report.loaded.push(name);
  };
  for (const w of wanted) visit(w, true);
  return { order, report };
}

export function wantedModules() {
  return readFileSync(join(HERE, 'modules.txt'), 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

// ---- initramfs ----------------------------------------------------------------

/** A newc cpio archive (what the kernel unpacks as an initramfs). */
function cpio(entries) {
  const parts = [];
  let ino = 1;
  const hex = (n) => n.toString(16).padStart(8, '0');
  const pad = (n) => Buffer.alloc((4 - (n % 4)) % 4);
  const add = (name, mode, data = Buffer.alloc(0), rdev = [0, 0]) => {
    const nameBuf = Buffer.from(`${name}\0`);
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBuf.length, 0];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`);
    parts.push(header, nameBuf, pad(header.length + nameBuf.length), data, pad(data.length));
  };
  for (const e of entries) {
    if (e.type === 'dir') add(e.name, 0o040755);
    else if (e.type === 'file') add(e.name, e.mode ?? 0o100644, e.data);
    else if (e.type === 'symlink') add(e.name, 0o120777, Buffer.from(e.target));
    else if (e.type === 'chr') add(e.name, 0o020600, undefined, e.rdev);
  }
  add('TRAILER!!!', 0);
  return Buffer.concat(parts);
}

/**
 * busybox-static, unpacked into the cache (the host's busybox, if any, may be
 * the dynamic build): the same binary on every machine.
 */
export function staticBusybox() {
  const dir = join(CACHE, 'busybox-static');
  const bin = join(dir, 'root/bin/busybox');
  if (existsSync(bin)) return bin;
  const tmp = `${dir}.tmp${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  log('apt-get download busybox-static');
  const get = () => run('apt-get', ['download', 'busybox-static'], { cwd: tmp });
  try {
    get();
  } catch {
    aptUpdate();
    get();
  }
  const deb = readdirSync(tmp).find((f) => f.endsWith('.deb'));
  if (!deb) throw new Error('apt-get download busybox-static: no .deb');
  run('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'root')]);
  rmSync(join(tmp, deb));
  if (!existsSync(join(tmp, 'root/bin/busybox'))) throw new Error('busybox-static has no bin/busybox');
  try {
    renameSync(tmp, dir);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another runner was first
  }
  return bin;
}

/** Builds (or reuses) the kernel's initramfs; returns its path and the module report. */
export function buildInitramfs(k) {
  const busybox = staticBusybox();
  const init = readFileSync(join(HERE, 'initramfs-init.sh'));
  const wanted = wantedModules();
  const key = createHash('sha256').update(init).update(wanted.join(',')).update(readFileSync(busybox)).update(k.release).digest('hex').slice(0, 12);
  const img = join(k.dir, `initramfs-${key}.img`);
  const reportFile = `${img}.json`;
  if (existsSync(img) && existsSync(reportFile)) return { img, modules: JSON.parse(readFileSync(reportFile, 'utf8')) };
  const { order, report } = resolveModules(k.modules, wanted);
  const entries = [
    ...['bin', 'dev', 'proc', 'sys', 'lib', 'lib/modules', 'lower', 'rw', 'newroot'].map((name) => ({ type: 'dir', name })),
    { type: 'chr', name: 'dev/console', rdev: [5, 1] },
    { type: 'file', name: 'bin/busybox', mode: 0o100755, data: readFileSync(busybox) },
    ...['sh', 'mount', 'insmod', 'mkdir', 'cut', 'uname', 'cp', 'cat', 'switch_root', 'echo'].map((a) => ({ type: 'symlink', name: `bin/${a}`, target: 'busybox' })),
    { type: 'file', name: 'init', mode: 0o100755, data: init },
    ...order.map((m) => ({ type: 'file', name: `lib/modules/${m.name}.ko`, data: m.data })),
    { type: 'file', name: 'modules.list', data: Buffer.from(order.map((m) => `${m.name}.ko\n`).join('')) },
  ];
  writeFileSync(`${img}.tmp`, gzipSync(cpio(entries), { level: 6 }));
  renameSync(`${img}.tmp`, img);
  writeFileSync(reportFile, JSON.stringify(report, null, 2));
  log(`initramfs for ${k.release}: ${(statSync(img).size / 1e6).toFixed(1)} MB, ${order.length} modules${report.missing.length ? `; not in this kernel: ${report.missing.join(', ')}` : ''}`);
  return { img, modules: report };
}

// ---- the guest ----------------------------------------------------------------

const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

function aliveWith(pid, text) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text);
  } catch {
    return false;
  }
}

/**
 * Claims the kernel's run folder for this process: refuses when another live
 * runner has it, and kills a qemu that an earlier, dead runner left behind.
 */
export function claimRunDir(runDir) {
  mkdirSync(runDir, { recursive: true });
  const owner = join(runDir, 'runner.pid');
  const pid = existsSync(owner) ? Number(readFileSync(owner, 'utf8').trim()) : 0;
  if (pid && pid !== process.pid && aliveWith(pid, 'run.mjs')) throw new Error(`${relative(ROOT, runDir)} is in use by runner ${pid}`);
  writeFileSync(owner, `${process.pid}\n`);
  sweepStaleQemu(runDir);
}

/** Kills a qemu of an earlier run of this kernel that is still alive (its runner was SIGKILLed). */
function sweepStaleQemu(runDir) {
  const pidFile = join(runDir, 'qemu.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmdline.includes('qemu-system') && cmdline.includes(runDir)) {
      log(`killing qemu ${pid} left by an earlier run in ${relative(ROOT, runDir)}`);
      process.kill(pid, 'SIGKILL');
    }
  } catch {
    // gone already
  }
  rmSync(pidFile, { force: true });
}

/**
 * Boots the kernel, runs the command in the guest and resolves when qemu is
 * gone. qemu dies with this process (setpriv --pdeathsig), on a timeout, and
 * on SIGINT/SIGTERM of this process.
 */
export async function boot(k, initramfs, job) {
  const runDir = join(BUILD, k.name);
  const out = join(runDir, 'out');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'guest-run.sh'), readFileSync(join(HERE, 'guest-run.sh')), { mode: 0o755 });
  writeFileSync(
    join(out, 'job.env'),
    [
      `KM_KERNEL=${q(k.name)}`,
      `KM_CWD=${q(job.cwd)}`,
      `KM_TIMEOUT=${Math.max(10, Math.floor(job.runTimeoutS - 20))}`,
      `KM_PROBE=${job.probe ? 1 : 0}`,
      `KM_PROBE_SCRIPT=${q(join(HERE, 'guest-probe.mjs'))}`,
      `KM_CMD=(${job.cmd.map(q).join(' ')})`,
      `KM_ENV=(${Object.entries(job.env).map(([key, v]) => q(`${key}=${v}`)).join(' ')})`,
      '',
    ].join('\n'),
  );
  const consolePath = join(runDir, 'console.log');
  const consoleFile = createWriteStream(consolePath);
  // Single-threaded TCG: with thread=multi, 6.12 guests now and then die of
  // "Oops: int3" in code the kernel has just patched (static keys: cross-CPU
  // code modification under MTTCG), at boot and whenever a BPF attach flips
  // a key. One host thread runs both vCPUs in turn.
  const accel = process.env.MESHLANE_KM_ACCEL ?? 'tcg,thread=single';
  const args = [
    '-accel', accel,
    '-cpu', accel.startsWith('kvm') ? 'host' : 'max',
    '-m', String(job.memMb),
    '-smp', String(job.smp),
    '-nodefaults', '-no-user-config', '-display', 'none', '-nic', 'none',
    '-serial', 'stdio',
    '-no-reboot',
    '-kernel', k.vmlinuz,
    '-initrd', initramfs,
    '-append', `console=ttyS0 panic=-1 oops=panic loglevel=4 meshlane_km=1 ${job.append ?? ''}`.trim(),
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${out},mount_tag=kmout,security_model=none,multidevs=remap`,
    '-device', 'virtio-rng-pci',
    '-pidfile', join(runDir, 'qemu.pid'),
  ];
  const qemu = 'qemu-system-x86_64';
  const [cmd, argv] = have('setpriv') ? ['setpriv', ['--pdeathsig', 'KILL', '--', qemu, ...args]] : [qemu, args];
  writeFileSync(join(runDir, 'qemu.cmdline'), `${[cmd, ...argv].map(q).join(' ')}\n`);

  const t0 = Date.now();
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const result = { bootS: null, exit: null, timedOut: null, consolePath, out, runDir };
  let buf = '';
  let bootTimer;
  let runTimer;
  const killQemu = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const onSignal = (sig) => {
    log(`${sig}: killing the ${k.name} guest`);
    killQemu();
    process.exit(130);
  };
  process.on('exit', killQemu);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  const onLine = (line) => {
    if (job.echo === 'all' || (job.echo === 'markers' && line.startsWith('meshlane-km:'))) process.stderr.write(`[${k.name}] ${line}\n`);
    if (result.bootS === null && line.includes('meshlane-km: guest ready')) {
      result.bootS = (Date.now() - t0) / 1000;
      clearTimeout(bootTimer);
      runTimer = setTimeout(() => {
        result.timedOut = 'run';
        log(`${k.name}: no end within ${job.runTimeoutS} s of boot: killing qemu`);
        killQemu();
      }, (job.runTimeoutS + 30) * 1000);
    }
  };
  const feed = (d) => {
    consoleFile.write(d);
    buf += d.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl).replace(/\r$/, ''));
      buf = buf.slice(nl + 1);
    }
  };
  child.stdout.on('data', feed);
  child.stderr.on('data', feed);
  bootTimer = setTimeout(() => {
    result.timedOut = 'boot';
    log(`${k.name}: guest not ready within ${job.bootTimeoutS} s: killing qemu`);
    killQemu();
  }, job.bootTimeoutS * 1000);

  const exit = await new Promise((res) => {
    child.once('error', (err) => res({ code: null, signal: null, error: err.message }));
    child.once('exit', (code, signal) => res({ code, signal }));
  });
  clearTimeout(bootTimer);
  clearTimeout(runTimer);
  process.removeListener('exit', killQemu);
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  process.removeListener('SIGHUP', onSignal);
  if (buf) onLine(buf);
  await new Promise((r) => consoleFile.end(r));
  rmSync(join(runDir, 'qemu.pid'), { force: true });
  rmSync(join(runDir, 'runner.pid'), { force: true });
  result.exit = exit;
  result.totalS = (Date.now() - t0) / 1000;
  return result;
}

export function tail(file, lines = 40) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
