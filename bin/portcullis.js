#!/usr/bin/env node
// The CLI entry. Loaded as plain JS so that the telemetry SDK (a later step of
// src/main.ts) can start before Fastify and undici are imported.
import '../src/main.ts';
