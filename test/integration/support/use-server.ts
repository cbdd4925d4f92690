/**
 * A setup file of every vitest project: before each test file, points the sandbox at the project's
 * server (a worker process may run files of more than one project, so it is set every time).
 */
import { inject } from 'vitest';
import { chooseServer } from '../../../src/sandbox/index.js';
import type { TestServer } from './servers.js';

const server: TestServer = inject('sandboxServers')[inject('sandboxServer')];
chooseServer({ serverPath: server.serverPath, cliPath: server.cliPath });
