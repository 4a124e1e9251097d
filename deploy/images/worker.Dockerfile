# syntax=docker/dockerfile:1.7
# ghcr.io/meshlane/meshlane-worker: the per-node agent (DaemonSet).
#
# Runtime: distroless Node.js 20 on Debian 12 (glibc, no shell, no package
# manager) plus exactly what scripts/stage puts in build/stage/worker:
# /opt/meshlane with the production node_modules (koffi's native part for
# this image's arch), proto and node-worker dist, the BPF objects and the
# behaviour probe in /opt/meshlane/bpf/out (the worker's default --bpf-dir),
# and libbpf.so.1, libelf.so.1, libz.so.1 in /opt/meshlane/lib.
# test/deploy/staged-install.test.ts runs that same tree with the
# DaemonSet's capabilities and a read-only root.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f deploy/images/worker.Dockerfile -t ghcr.io/meshlane/meshlane-worker:0.1.0 .
# or scripts/images worker [--push].

ARG NODE_IMAGE=node:20-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs20-debian12:latest

# TypeScript, once, on the build machine's arch (the output is plain JS).
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS ts
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY proto/package.json proto/
COPY node-worker/package.json node-worker/
COPY controlplane/package.json controlplane/
COPY test/package.json test/
RUN npm ci --no-audit --no-fund --loglevel=error
COPY proto/ proto/
COPY node-worker/ node-worker/
RUN npx tsc -b proto node-worker

# BPF objects, the behaviour probe (a native program) and the production
# install, on the image's arch: npm picks koffi's native part for it, and
# libbpf/libelf/zlib are Debian 12's, the runtime base's release.
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY node-worker/package.json node-worker/
COPY controlplane/package.json controlplane/
COPY test/package.json test/
COPY bpf/ bpf/
RUN rm -rf bpf/out \
 && make -s -C bpf out/sockops.bpf.o out/redirect.bpf.o out/probe.bpf.o out/behaviour-probe.bpf.o out/behaviour-probe
COPY --from=ts /src/proto/dist proto/dist
COPY --from=ts /src/node-worker/dist node-worker/dist
COPY scripts/stage scripts/stage
RUN bash scripts/stage worker --out /stage

FROM ${RUNTIME_IMAGE}
COPY --from=build /stage/worker/ /
ENV LD_LIBRARY_PATH=/opt/meshlane/lib NODE_ENV=production
WORKDIR /opt/meshlane
# bpffs (/sys/fs/bpf, 0700 root) and cgroup attach need uid 0; the
# DaemonSet drops every capability but BPF, PERFMON, NET_ADMIN, SYS_RESOURCE.
USER 0:0
ENTRYPOINT ["/nodejs/bin/node", "/opt/meshlane/node-worker/dist/cli.js"]
CMD ["--help"]
LABEL org.opencontainers.image.title="meshlane-worker" \
      org.opencontainers.image.description="meshlane node agent: loads the eBPF fast lane for Istio sidecar traffic"
