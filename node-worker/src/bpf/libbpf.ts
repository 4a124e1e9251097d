/**
 * The few libbpf 1.x calls the worker needs, bound with koffi: no process is
 * spawned per map update and no addon has to be compiled on the node.
 *
 * libbpf 1.x returns -errno from int-returning calls and NULL (with errno
 * set) from pointer-returning ones; both become a BpfError here.
 */
import koffi from 'koffi';

export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    readonly op: string,
    readonly errno: number,
  ) {
    super(`${op}: ${errnoName(errno)} (${errno})`);
  }
}

const ERRNO: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 7: 'E2BIG', 9: 'EBADF', 12: 'ENOMEM', 13: 'EACCES', 16: 'EBUSY',
  17: 'EEXIST', 22: 'EINVAL', 28: 'ENOSPC', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
};

export function errnoName(errno: number): string {
  return ERRNO[errno] ?? `errno ${errno}`;
}

// Opaque handles: never dereferenced on this side.
export type ObjectPtr = { readonly __brand: 'bpf_object' };
export type MapPtr = { readonly __brand: 'bpf_map' };
export type ProgramPtr = { readonly __brand: 'bpf_program' };

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');
koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');

const f = {
  openFile: lib.func('bpf_object *bpf_object__open_file(const char *path, const void *opts)'),
  load: lib.func('int bpf_object__load(bpf_object *obj)'),
  close: lib.func('void bpf_object__close(bpf_object *obj)'),
  nextMap: lib.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
  mapName: lib.func('const char *bpf_map__name(const bpf_map *map)'),
  mapSetPinPath: lib.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  mapSetMaxEntries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max)'),
  mapFd: lib.func('int bpf_map__fd(const bpf_map *map)'),
  findProgram: lib.func('bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)'),
  programFd: lib.func('int bpf_program__fd(const bpf_program *prog)'),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  linkDetach: lib.func('int bpf_link_detach(int link_fd)'),
  progAttach: lib.func('int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)'),
  linkUpdate: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
  progGetFdById: lib.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
  progDetach2: lib.func('int bpf_prog_detach2(int prog_fd, int attachable_fd, int type)'),
  objPin: lib.func('int bpf_obj_pin(int fd, const char *path)'),
  objGet: lib.func('int bpf_obj_get(const char *path)'),
  objGetInfo: lib.func('int bpf_obj_get_info_by_fd(int fd, _Inout_ uint8_t *info, _Inout_ uint32_t *len)'),
  update: lib.func('int bpf_map_update_elem(int fd, const uint8_t *key, const uint8_t *value, uint64_t flags)'),
  lookup: lib.func('int bpf_map_lookup_elem(int fd, const uint8_t *key, _Out_ uint8_t *value)'),
  del: lib.func('int bpf_map_delete_elem(int fd, const uint8_t *key)'),
  nextKey: lib.func('int bpf_map_get_next_key(int fd, const uint8_t *key, _Out_ uint8_t *next)'),
  updateBatch: lib.func('int bpf_map_update_batch(int fd, const uint8_t *keys, const uint8_t *values, _Inout_ uint32_t *count, const void *opts)'),
  deleteBatch: lib.func('int bpf_map_delete_batch(int fd, const uint8_t *keys, _Inout_ uint32_t *count, const void *opts)'),
  possibleCpus: lib.func('int libbpf_num_possible_cpus(void)'),
  mapCreate: lib.func('int bpf_map_create(int type, const char *name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)'),
  closeFd: libc.func('int close(int fd)'),
};

function check(op: string, rc: number): number {
  if (rc < 0) throw new BpfError(op, -rc);
  return rc;
}

function checkPtr<T>(op: string, p: unknown): T {
  if (p === null) throw new BpfError(op, koffi.errno());
  return p as T;
}

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** enum bpf_attach_type values used here (uapi/linux/bpf.h). */
export const BPF_CGROUP_SOCK_OPS = 3;
export const BPF_SK_MSG_VERDICT = 7;

export const libbpf = {
  openObject: (path: string): ObjectPtr => checkPtr(`opening ${path}`, f.openFile(path, null)),
  loadObject: (obj: ObjectPtr): void => void check('loading object', f.load(obj)),
  closeObject: (obj: ObjectPtr): void => void f.close(obj),
  maps(obj: ObjectPtr): MapPtr[] {
    const out: MapPtr[] = [];
    for (let m = f.nextMap(obj, null) as MapPtr | null; m; m = f.nextMap(obj, m) as MapPtr | null) out.push(m);
    return out;
  },
  mapName: (m: MapPtr): string => f.mapName(m) as string,
  setPinPath: (m: MapPtr, path: string): void => void check('setting pin path', f.mapSetPinPath(m, path)),
  setMaxEntries: (m: MapPtr, n: number): void => void check('setting max_entries', f.mapSetMaxEntries(m, n)),
  mapFd: (m: MapPtr): number => check('map fd', f.mapFd(m)),
  programFd(obj: ObjectPtr, name: string): number {
    const p = checkPtr<ProgramPtr>(`finding program ${name}`, f.findProgram(obj, name));
    return check(`program ${name} fd`, f.programFd(p));
  },
  linkCreate: (progFd: number, targetFd: number, type: number): number =>
    check('creating link', f.linkCreate(progFd, targetFd, type, null)),
  /** Like linkCreate, but returns -errno instead of throwing (feature probes). */
  tryLinkCreate: (progFd: number, targetFd: number, type: number): number => f.linkCreate(progFd, targetFd, type, null) as number,
  linkDetach: (linkFd: number): void => void check('detaching link', f.linkDetach(linkFd)),
  /** The attach that predates bpf_links: the program lives on the map (sockmap verdicts before 6.10). */
  progAttach: (progFd: number, targetFd: number, type: number): void => void check('attaching program', f.progAttach(progFd, targetFd, type, 0)),
  progDetach: (progFd: number, targetFd: number, type: number): void => void check('detaching program', f.progDetach2(progFd, targetFd, type)),
  /** BPF_LINK_UPDATE: the link runs newProgFd from now on, atomically. */
  linkUpdate: (linkFd: number, newProgFd: number): void => void check('updating link', f.linkUpdate(linkFd, newProgFd, null)),
  progFdById: (id: number): number => check(`opening program ${id}`, f.progGetFdById(id)),
  pin: (fd: number, path: string): void => void check(`pinning ${path}`, f.objPin(fd, path)),
  objGet: (path: string): number => check(`opening pinned ${path}`, f.objGet(path)),
  /** struct bpf_map_info / bpf_link_info / bpf_prog_info, raw. */
  objInfo(fd: number, size: number): Buffer {
    const info = Buffer.alloc(size);
    const len = [size];
    check('reading object info', f.objGetInfo(fd, info, len));
    return info;
  },
  update: (fd: number, key: Buffer, value: Buffer, flags: number): number => f.update(fd, key, value, flags) as number,
  lookup: (fd: number, key: Buffer, value: Buffer): number => f.lookup(fd, key, value) as number,
  del: (fd: number, key: Buffer): number => f.del(fd, key) as number,
  nextKey: (fd: number, key: Buffer | null, next: Buffer): number => f.nextKey(fd, key, next) as number,
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: number): number {
    const n = [count];
    const rc = f.updateBatch(fd, keys, values, n, null) as number;
    if (rc < 0) throw new BpfError(`batch update (${n[0]} of ${count} applied)`, -rc);
    return n[0] ?? count;
  },
  deleteBatch(fd: number, keys: Buffer, count: number): number {
    const n = [count];
    const rc = f.deleteBatch(fd, keys, n, null) as number;
    if (rc < 0) throw new BpfError(`batch delete (${n[0]} of ${count} applied)`, -rc);
    return n[0] ?? count;
  },
  possibleCpus: (): number => check('counting CPUs', f.possibleCpus()),
  /** Creates a throwaway map (feature probes); returns -errno instead of throwing. */
  tryMapCreate: (type: number, keySize: number, valueSize: number, max: number): number =>
    f.mapCreate(type, null, keySize, valueSize, max, null) as number,
  closeFd: (fd: number): void => void f.closeFd(fd),
};
