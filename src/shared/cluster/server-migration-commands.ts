/**
 * The commands of the servers' own slot migration (Valkey 9: CLUSTER MIGRATESLOTS,
 * GETSLOTMIGRATIONS, CANCELSLOTMIGRATIONS), sent through the node connections. A server without
 * them (Redis, Valkey 8) answers "unknown subcommand": for the listing that means "none", so a
 * planner can ask every server the same question.
 */
import {
  parseServerMigrations,
  type ServerMigration,
  slotsRangeArguments,
} from '../domain/server-migrations.js';
import { ErrorCode, errorCodeOf, SlotfleetError } from '../errors.js';
import type { NodeConnections } from './connections.js';
import type { NodeAddress } from './port.js';

export class ServerMigrationCommands {
  constructor(private readonly connections: NodeConnections) {}

  async list(node: NodeAddress): Promise<ServerMigration[] | undefined> {
    try {
      const reply = await this.connections.run(node, 'CLUSTER GETSLOTMIGRATIONS', (redis) =>
        redis.call('CLUSTER', 'GETSLOTMIGRATIONS'),
      );
      return parseServerMigrations(reply);
    } catch (error) {
      // Redis 7.0 and Valkey 8 have no such command (mapped in error-map.ts): "none".
      if (errorCodeOf(error) === ErrorCode.AtomicUnsupported) return undefined;
      if (error instanceof SlotfleetError && error.code === ErrorCode.AuthFailed) {
        throw new SlotfleetError(
          ErrorCode.AuthFailed,
          `${error.message}: on Valkey 9 slotfleet reads every master's server slot migrations before it ` +
            'plans and while the atomic engine runs; give its ACL user +cluster|getslotmigrations ' +
            '+cluster|migrateslots +cluster|cancelslotmigrations (docs/operations.md, Password and ACL clusters)',
          { cause: error },
        );
      }
      throw error;
    }
  }

  async start(source: NodeAddress, slots: readonly number[], targetId: string): Promise<void> {
    const ranges = slotsRangeArguments(slots);
    await this.connections.run(
      source,
      `CLUSTER MIGRATESLOTS of ${slots.length} slots to ${targetId}`,
      (redis) => redis.call('CLUSTER', 'MIGRATESLOTS', 'SLOTSRANGE', ...ranges, 'NODE', targetId),
      { immediate: true },
    );
  }

  async cancelAll(source: NodeAddress): Promise<void> {
    await this.connections.run(source, 'CLUSTER CANCELSLOTMIGRATIONS', (redis) =>
      redis.call('CLUSTER', 'CANCELSLOTMIGRATIONS'),
    );
  }
}
