# syntax=docker/dockerfile:1.7
# ghcr.io/meshlane/meshlane-controlplane: the control plane beside istiod,
# and the operators' CLI (`meshlane`, /opt/meshlane/controlplane/dist/meshlane.js).
#
# Runtime: distroless Node.js 20 on Debian 12, nonroot (uid/gid 65532), no
# shell, plus exactly what scripts/stage puts in build/stage/controlplane:
# /opt/meshlane with the production node_modules, proto and controlplane
# dist, and the control plane's own .proto files (controlplane/src/xds).
# test/deploy/staged-install.test.ts runs that same tree as uid 65532 with a
# read-only root.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f deploy/images/controlplane.Dockerfile -t ghcr.io/meshlane/meshlane-controlplane:0.1.0 .
# or scripts/images controlplane [--push].

ARG NODE_IMAGE=node:20-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs20-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS ts
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY proto/package.json proto/
COPY node-worker/package.json node-worker/
COPY controlplane/package.json controlplane/
COPY test/package.json test/
RUN npm ci --no-audit --no-fund --loglevel=error
COPY proto/ proto/
COPY controlplane/ controlplane/
RUN npx tsc -b proto controlplane

# The production install on the image's arch.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY proto/package.json proto/
COPY node-worker/package.json node-worker/
COPY controlplane/package.json controlplane/
COPY test/package.json test/
COPY controlplane/src/xds/*.proto controlplane/src/xds/
COPY --from=ts /src/proto/dist proto/dist
COPY --from=ts /src/controlplane/dist controlplane/dist
COPY scripts/stage scripts/stage
RUN bash scripts/stage controlplane --out /stage

FROM ${RUNTIME_IMAGE}
COPY --from=build /stage/controlplane/ /
ENV NODE_ENV=production
WORKDIR /opt/meshlane
USER 65532:65532
ENTRYPOINT ["/nodejs/bin/node", "/opt/meshlane/controlplane/dist/cli.js"]
LABEL org.opencontainers.image.title="meshlane-controlplane" \
      org.opencontainers.image.description="meshlane control plane: per-node desired state of the eBPF fast lane, from Kubernetes and istiod"
