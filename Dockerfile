# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY config ./config
RUN npm ci --no-audit --no-fund && npm run build

# Runtime stage: production dependencies and compiled output only, run as an unprivileged user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    BUILDCACHED_LISTEN=0.0.0.0:5000 \
    BUILDCACHED_DATA=/var/lib/buildcached
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY config ./config
RUN useradd --system --uid 10001 --home-dir /var/lib/buildcached buildcached \
    && mkdir -p /var/lib/buildcached && chown buildcached /var/lib/buildcached
USER buildcached
VOLUME ["/var/lib/buildcached"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/main.js"]
CMD ["serve"]
