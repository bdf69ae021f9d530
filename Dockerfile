# syntax=docker/dockerfile:1
# One image for every role: ROLE=all (default), api or worker (docs/refunds-api.md §1).

# ---- build: full dependencies, compile, then drop the dev dependencies -------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
COPY package.json package-lock.json ./
# `npm ci` is not used: the lock lacks some optional platform packages of
# msgpackr-extract, which makes npm ci refuse it; npm install honours the lock.
RUN npm install --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY src ./src
COPY migrations ./migrations
COPY console ./console
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# ---- runtime -----------------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime
WORKDIR /app
# The heap cap keeps each process's RSS under 300 MB at full load; without it V8 lets
# uncollected garbage grow the heap to ~400 MB (docs/performance.md, memory).
ENV NODE_ENV=production \
    NODE_OPTIONS=--max-old-space-size=192 \
    PORT=3000 \
    NPM_CONFIG_UPDATE_NOTIFIER=false
COPY --from=build --chown=node:node /app/package.json /app/package-lock.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
USER node
EXPOSE 3000
# Liveness over HTTP with node itself (slim images have no curl). A worker (ROLE=worker)
# serves no HTTP; for it a running process is all there is to check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "if (process.env.ROLE === 'worker') process.exit(0); fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health/live', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1));"]
# exec form: node is PID 1 and receives SIGTERM directly (graceful shutdown hooks).
CMD ["node", "dist/src/main.js"]
