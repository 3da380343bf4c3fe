// Starts the real Herald binary (HERALD_BIN, built by run.sh) on 127.0.0.1 with the embedded default
// config (or a config file), and stops/restarts it on the same port.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');

export function heraldBinary() {
  return process.env.HERALD_BIN || path.join(repoRoot, 'target', 'debug', 'herald');
}

/** A free TCP port on 127.0.0.1 (the OS picks one; it is released before use). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Servers still running when the test process ends (a crash, a timeout) are stopped with it.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class HeraldServer {
  constructor({ port, config } = {}) {
    this.port = port;
    this.config = config;
    this.child = null;
    this.log = '';
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!this.port) this.port = await freePort();
    const args = ['--listen', `127.0.0.1:${this.port}`];
    if (this.config) args.unshift('--config', this.config);
    const child = spawn(heraldBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    child.once('exit', () => running.delete(child));
    const collect = (chunk) => {
      this.log += chunk.toString();
      if (this.log.length > 200_000) this.log = this.log.slice(-100_000);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const deadline = Date.now() + 15_000;
    for (;;) {
      const early = await Promise.race([exited.then(() => true), sleep(50).then(() => false)]);
      if (early) throw new Error(`herald exited at start:\n${this.log}`);
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return this;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`herald did not start:\n${this.log}`);
    }
  }

  /** SIGTERM and wait for the exit (SIGKILL after 10 s). */
  async stop() {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(downMs = 0) {
    await this.stop();
    if (downMs) await sleep(downMs);
    await this.start();
  }

  /** POST text to /pub?id=channel; returns the channel info. */
  async publish(channel, text, headers = {}) {
    const res = await fetch(`${this.url}/pub?id=${encodeURIComponent(channel)}`, {
      method: 'POST',
      headers,
      body: text,
    });
    const body = await res.text();
    if (!res.ok) throw new Error(`publish ${channel}: ${res.status} ${body}`);
    return JSON.parse(body);
  }

  async json(pathAndQuery) {
    const res = await fetch(`${this.url}${pathAndQuery}`);
    if (!res.ok) throw new Error(`${pathAndQuery}: ${res.status}`);
    return res.json();
  }
}
