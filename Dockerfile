# One image for every slotfleet process: `api`, `worker` (and `demo`, which needs redis-server).
# Used by docker-compose.yml; build with `docker build -t slotfleet .`.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's `prepare` builds dist/, which needs the sources copied below.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
# 8080: API (SLOTFLEET_API_PORT); 9464: worker /metrics (SLOTFLEET_METRICS_PORT).
EXPOSE 8080 9464
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["api"]
