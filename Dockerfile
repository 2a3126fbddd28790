# One image for every node (SERVICES picks what a container runs) and for the migration
# Job (`npm run migrate`). Node 22: Moleculer 0.15 declares it (DESIGN.md, versions).
#   docker build -t meridian:dev .
#   docker build --build-arg TYPECHECK=false -t meridian:dev .   (skip the type check)

# ---- build: every dependency (native ones compile here: better-sqlite3, argon2), the
# type check, then the dev dependencies removed.
FROM node:22-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
ARG TYPECHECK=true
RUN if [ "$TYPECHECK" = "true" ]; then npm run typecheck; fi
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime: production dependencies and the sources only. TypeScript runs through tsx
# (a runtime dependency), as with `npm start`: nothing is compiled.
FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and not writable by the app's user: the code cannot be changed at run time
# (the manifests also mount the root file system read-only; /tmp is an emptyDir).
COPY --from=build /app/package.json /app/package-lock.json /app/tsconfig.json /app/moleculer.config.ts /app/app.ts ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/lib ./lib
COPY --from=build /app/mixins ./mixins
COPY --from=build /app/proto ./proto
COPY --from=build /app/services ./services
# The image's non-root user (uid 1000, as in the manifests' securityContext).
USER node
EXPOSE 3000 3001
# `npm start` runs `tsx bin/start.ts`; here node itself is PID 1 with tsx as its loader,
# so SIGTERM reaches the app's shutdown handler directly (npm and tsx's own CLI would sit
# between them as extra processes relaying the signal).
CMD ["node", "--import", "tsx", "bin/start.ts"]
