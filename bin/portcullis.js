#!/usr/bin/env node
// The CLI entry. Loaded as plain JS so that the telemetry SDK (a later step of
// src/main.ts) can start before Fastify and undici are imported. `npm start` and the Dockerfile run
// it with --max-semi-space-size=4 (a smaller young generation: measured in bench/README.md).
import '../src/main.ts';
