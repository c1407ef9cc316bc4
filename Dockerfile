# syntax=docker/dockerfile:1
# Both stages start from BASE_IMAGE: any Debian-based image with Node 20 (node, npm) and useradd on PATH. The
# default is the official Node image; `--build-arg BASE_IMAGE=…` builds from another one (a mirror, a pinned digest,
# or the local base the e2e test makes where Docker Hub is out of reach).
ARG BASE_IMAGE=node:20-bookworm-slim

# Build stage: compile TypeScript with the dev dependencies (npm ci runs the prepare script, which builds dist/
# with config/default.yaml compiled in).
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
COPY scripts ./scripts
COPY src ./src
COPY config ./config
RUN npm ci --no-audit --no-fund

# Runtime stage: production dependencies and compiled output only, run as an unprivileged user.
FROM ${BASE_IMAGE}
# 0.0.0.0 is the only way to be reachable from outside a container, so allow it without tls or auth: what is
# exposed is `docker run -p` (-p 127.0.0.1:5000:5000 keeps it to the host). With tls or auth configured (a config
# file mounted and named by BUILDCACHED_CONFIG) this changes nothing.
ENV NODE_ENV=production \
    BUILDCACHED_LISTEN=0.0.0.0:5000 \
    BUILDCACHED_ALLOW_INSECURE=true \
    BUILDCACHED_DATA=/var/lib/buildcached
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
RUN useradd --system --uid 10001 --home-dir /var/lib/buildcached buildcached \
    && mkdir -p /var/lib/buildcached && chown buildcached /var/lib/buildcached
USER buildcached
VOLUME ["/var/lib/buildcached"]
EXPOSE 5000
# `health` reads the daemon's own address from DATA/daemon.json, so it holds whatever listen is set to.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s CMD ["node", "/app/dist/main.js", "health"]
# SIGTERM drains in-flight uploads for up to shutdownTimeout (60s): run with `--stop-timeout 70` (compose:
# stop_grace_period: 70s), since docker stop kills after 10 s by default.
STOPSIGNAL SIGTERM
# --initial-old-space-size: the heap floor a single process (workers: 1) takes only from its command line.
ENTRYPOINT ["node", "--initial-old-space-size=64", "/app/dist/main.js"]
CMD ["serve"]
