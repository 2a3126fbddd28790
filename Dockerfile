# One image for every node (SERVICES picks what a container runs) and for the Jobs
# (`node dist/bin/migrate.js`, `node dist/bin/etcd-auth.js`). Node 22: Moleculer 0.15
# declares it (DESIGN.md, versions).
#   docker build -t meridian:dev .
#   docker build --build-arg TYPECHECK=false -t meridian:dev .   (skip the whole tree's type
#   check: tests, benchmarks; `npm run build` still checks the production code it compiles)

# ---- build: every dependency (native ones compile here: better-sqlite3, argon2), the
# type check, the compiled build (`npm run build`: dist/), then the dev dependencies
# removed (tsx, typescript and the test tools among them).
FROM node:22-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
ARG TYPECHECK=true
RUN if [ "$TYPECHECK" = "true" ]; then npm run typecheck; fi
RUN npm run build
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime: production dependencies and the compiled code only (no TypeScript, no tsx:
# README "Compiled build" has the start time and memory it saves).
FROM node:22-bookworm-slim AS runtime
# Source maps (dist/**/*.js.map): stack traces in the logs name the TypeScript lines.
ENV NODE_ENV=production NODE_OPTIONS=--enable-source-maps
WORKDIR /app
# Owned by root and not writable by the app's user: the code cannot be changed at run time
# (the manifests also mount the root file system read-only; /tmp is an emptyDir).
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The image's non-root user (uid 1000, as in the manifests' securityContext).
USER node
EXPOSE 3000 3001
# Node itself is PID 1, so SIGTERM reaches the app's shutdown handler directly (npm would
# sit between them as an extra process relaying the signal).
CMD ["node", "dist/bin/start.js"]
