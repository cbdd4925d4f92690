/**
 * A bare RESP connection for bulk seeding: commands are encoded into one string per chunk
 * and replies are only counted and checked for errors.
 *
 * Why not an ioredis pipeline: it allocates a Command and a promise per command, which costs
 * about 9 µs of CPU per key (mostly garbage collection), so a million keys took 10+ s of pure
 * client time on a 2-core machine. Replies to write commands are simple (+OK, :n, $id, -ERR),
 * so counting them needs no general parser.
 */
import { connect, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTls } from 'node:tls';

const CR = 0x0d;
const SIMPLE_STRING = 0x2b; // +
const ERROR = 0x2d; // -
const INTEGER = 0x3a; // :
const BULK_STRING = 0x24; // $

export interface RespTarget {
  host: string;
  port: number;
  /** An ACL user: AUTH username password. */
  username?: string;
  password?: string;
  /** Node TLS options: set, the connection is TLS (verified against their CA). */
  tls?: ConnectionOptions | undefined;
}

interface Waiter {
  replyCount: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

export class RespPipeline {
  private leftover: Buffer | undefined;
  private repliesExpected = 0;
  private repliesReceived = 0;
  private failure: Error | undefined;
  private readonly waiters: Waiter[] = [];

  private constructor(
    private readonly socket: Socket,
    readonly target: RespTarget,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error(`connection to ${this.describe()} closed`)));
    socket.on('timeout', () => {
      this.fail(new Error(`no reply from ${this.describe()} for ${socket.timeout} ms`));
      socket.destroy();
    });
  }

  /** Opens the connection and authenticates; a silent server fails it after `idleTimeoutMs`. */
  static async open(target: RespTarget, idleTimeoutMs = 30_000): Promise<RespPipeline> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const candidate =
        target.tls === undefined
          ? connect({ host: target.host, port: target.port })
          : connectTls({ ...target.tls, host: target.host, port: target.port });
      candidate.setNoDelay(true);
      candidate.setTimeout(idleTimeoutMs);
      // A TLS socket is usable once the handshake has verified the server, not at TCP connect.
      candidate.once(target.tls === undefined ? 'connect' : 'secureConnect', () => {
        candidate.off('error', reject);
        resolve(candidate);
      });
      candidate.once('error', reject);
    });
    const pipeline = new RespPipeline(socket, target);
    if (target.password !== undefined) {
      const auth = target.username === undefined ? [target.password] : [target.username, target.password];
      await pipeline.send(encodeCommand(['AUTH', ...auth]), 1);
    }
    return pipeline;
  }

  /** Writes `payload` (holding `commandCount` encoded commands) and resolves once all replies are in. */
  send(payload: string, commandCount: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    this.repliesExpected += commandCount;
    const replyCount = this.repliesExpected;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ replyCount, resolve, reject }));
    this.socket.write(payload);
    return done;
  }

  close(): void {
    this.failure ??= new Error(`connection to ${this.describe()} closed by the client`);
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const buffer = this.leftover === undefined ? chunk : Buffer.concat([this.leftover, chunk]);
    let offset = 0;
    while (offset < buffer.length) {
      const lineEnd = buffer.indexOf(CR, offset);
      if (lineEnd === -1 || lineEnd + 1 >= buffer.length) break;
      const type = buffer[offset];
      let next = lineEnd + 2;
      if (type === BULK_STRING) {
        const length = Number(buffer.toString('latin1', offset + 1, lineEnd));
        if (length >= 0) next += length + 2;
        if (next > buffer.length) break;
      } else if (type === ERROR) {
        this.fail(new Error(`${this.describe()} replied: ${buffer.toString('utf8', offset + 1, lineEnd)}`));
      } else if (type !== SIMPLE_STRING && type !== INTEGER) {
        this.fail(
          new Error(`${this.describe()} sent an unexpected reply type ${String.fromCharCode(type ?? 0)}`),
        );
        this.socket.destroy();
        return;
      }
      offset = next;
      this.repliesReceived++;
    }
    this.leftover = offset < buffer.length ? Buffer.from(buffer.subarray(offset)) : undefined;
    while (this.waiters.length > 0 && this.waiters[0]!.replyCount <= this.repliesReceived) {
      const waiter = this.waiters.shift()!;
      if (this.failure === undefined) waiter.resolve();
      else waiter.reject(this.failure);
    }
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure);
  }

  private describe(): string {
    return `${this.target.host}:${this.target.port}`;
  }
}

export function encodeCommand(args: readonly string[]): string {
  let encoded = `*${args.length}\r\n`;
  for (const arg of args) encoded += `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`;
  return encoded;
}
