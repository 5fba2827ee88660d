/**
 * The `nginx` target: nginx with one worker in front of the same upstream, its access log on
 * (buffered, as a production nginx logs), upstream keep-alive: the reference for what a proxy
 * hop and a log line can cost. Skipped (with the reason) when `nginx` is not on PATH (or
 * `NGINX`); nothing else depends on it.
 */
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, startProcess, stopChild } from './processes.ts';
import type { Target } from './targets.ts';

const NGINX = process.env.NGINX ?? 'nginx';
const READY_TIMEOUT_MS = 10_000;

function nginxConf(port: number, upstreamUrl: string, dir: string): string {
  const upstream = new URL(upstreamUrl);
  return `worker_processes 1;
daemon off;
master_process off;
pid ${join(dir, 'nginx.pid')};
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log ${join(dir, 'access.log')} combined buffer=32k flush=1s;
  client_body_temp_path ${dir};
  proxy_temp_path ${dir};
  fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir};
  scgi_temp_path ${dir};
  upstream bench { server ${upstream.host}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location /bench/ {
      proxy_pass http://bench/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

export const nginxTarget: Target = {
  name: 'nginx',
  description: 'nginx, 1 worker, access log on (buffered), upstream keep-alive',
  optional: true,
  async start({ upstreamUrl, proxyCpu, workDir }) {
    try {
      execFileSync(NGINX, ['-v'], { stdio: 'ignore' });
    } catch {
      throw new Error(`${NGINX} not found on PATH (set NGINX=<path> to compare with nginx)`);
    }
    const port = await freePort();
    const conf = join(workDir, 'nginx.conf');
    await writeFile(conf, nginxConf(port, upstreamUrl, workDir));
    // master_process off: the one process serving is the one measured.
    const child = startProcess('nginx', NGINX, ['-p', workDir, '-c', conf], proxyCpu);
    const url = `http://127.0.0.1:${port}/bench/hello`;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const ok = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) {
        await stopChild(child);
        throw new Error(`nginx did not answer on ${url}:\n${child.outputTail()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return { url, proxies: [child], stop: () => stopChild(child) };
  },
};
