# syntax=docker/dockerfile:1

# hubfarm image: one static binary on distroless, running as a non-root user.
#
#   docker build -t hubfarm .
#   docker run --rm -p 8080:8080 hubfarm serve --redis redis://redis:6379/0
#
# Flags can also be given as HUBFARM_* environment variables (see README.md).
#
# The binary is built by scripts/build-release.sh, which CI also runs (it has
# no Docker engine), so the build below is checked on every CI run.
#
# No HEALTHCHECK: the distroless image has no shell or HTTP client to run one.
# Probe the node over HTTP instead: Kubernetes liveness on GET /healthz and
# readiness on GET /readyz (port 8080); with Docker Compose, let the load
# balancer or a sidecar do the checks.

# Build on the builder's own platform and cross-compile (no cgo), which keeps
# multi-platform builds fast.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src

# Dependencies first, so source changes do not invalidate the module download.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH bash scripts/build-release.sh /out/hubfarm

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/hubfarm /hubfarm
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/hubfarm"]
CMD ["serve"]
