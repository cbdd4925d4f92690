/**
 * The keys engine: the slot runs through the state machine of src/shared/domain/slot-migration.ts
 * (SETSLOT IMPORTING and MIGRATING, MIGRATE batches until the source is empty, then SETSLOT NODE on
 * every master), as redis-cli does it, made restartable. Works on every Redis and Valkey.
 */
import { MigrationEngine } from '../../shared/domain/migration.js';
import { driveSlot } from '../slot-run.js';
import type { SlotMover } from './slot-mover.js';

export const keysMover: SlotMover = {
  engine: MigrationEngine.Keys,
  moveSlot: (data, phase, deps) => driveSlot(data, phase, deps),
};
