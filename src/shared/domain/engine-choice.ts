/**
 * Which engine a new migration runs with, and what on the cluster forbids it now. Pure: the producer
 * reads every master once (the server slot migrations it lists, the databases holding keys) and asks
 * `checkEngine`, which answers the engine or the first refusal:
 *
 *   atomic-for-repairs  fix repairs open slots with hand-made SETSLOT, which Valkey refuses on a node
 *                       running a server task: fix runs with keys (auto means keys), never atomic.
 *   atomic-unsupported  atomic asked, and some master has no atomic slot migration (Redis, Valkey 8):
 *                       auto would have chosen keys there.
 *   server-task         a slot the plan moves is held by a server task in progress (either end lists
 *                       it, whoever started it): neither engine may touch the slot until it ends.
 *   open-slots          atomic, and a source or target of the plan has IMPORTING/MIGRATING slots made
 *                       by hand: Valkey refuses MIGRATESLOTS there ("Slots are being manually migrated").
 *   other-databases     keys, and a master holds keys in a database other than 0: the keys engine
 *                       (GETKEYSINSLOT, MIGRATE) moves database 0 only; atomic moves every database.
 *
 * The refusals are data; the producer words them (src/producer/conflicts.ts).
 */
import { databasesBeyondZero, type KeyspaceDatabase } from './keyspace.js';
import { EngineChoice, MigrationEngine, resolveEngine } from './migration.js';
import type { NodeRef, OpenSlot, SlotMove } from './plan.js';
import {
  isInProgress,
  type ServerMigration,
  ServerMigrationOperation,
  taskHolding,
} from './server-migrations.js';

/** What the producer read of one master for the choice. */
export interface MasterFacts {
  readonly node: NodeRef;
  /** CLUSTER GETSLOTMIGRATIONS; undefined: the server has no atomic slot migration. */
  readonly serverMigrations: readonly ServerMigration[] | undefined;
  /** INFO keyspace: the databases holding keys. */
  readonly databases: readonly KeyspaceDatabase[];
}

export const EngineRefusalKind = {
  AtomicForRepairs: 'atomic-for-repairs',
  AtomicUnsupported: 'atomic-unsupported',
  ServerTask: 'server-task',
  OpenSlots: 'open-slots',
  OtherDatabases: 'other-databases',
} as const;
export type EngineRefusalKind = (typeof EngineRefusalKind)[keyof typeof EngineRefusalKind];

/** A server task in progress and the plan's slots it holds. */
export interface TaskHolding {
  readonly task: ServerMigration;
  readonly slots: readonly number[];
  /** A master that lists it (the source, when it does). */
  readonly listedBy: NodeRef;
}

/** A hand-made open slot on a node of the plan. */
export interface OpenSlotOnNode extends OpenSlot {
  readonly node: NodeRef;
}

export interface NodeDatabases {
  readonly node: NodeRef;
  readonly databases: readonly KeyspaceDatabase[];
}

export type EngineRefusal =
  | { readonly kind: typeof EngineRefusalKind.AtomicForRepairs }
  | { readonly kind: typeof EngineRefusalKind.AtomicUnsupported; readonly lacking: readonly NodeRef[] }
  | { readonly kind: typeof EngineRefusalKind.ServerTask; readonly holdings: readonly TaskHolding[] }
  | { readonly kind: typeof EngineRefusalKind.OpenSlots; readonly openSlots: readonly OpenSlotOnNode[] }
  | { readonly kind: typeof EngineRefusalKind.OtherDatabases; readonly nodes: readonly NodeDatabases[] };

export type EngineCheck =
  | { readonly engine: MigrationEngine; readonly refusal?: undefined }
  | { readonly engine?: undefined; readonly refusal: EngineRefusal };

export interface EngineCheckInput {
  readonly choice: EngineChoice;
  /** The migration repairs slots by hand (fix): SETSLOT on open slots, keys engine only. */
  readonly repairsByHand: boolean;
  /** Every master of the cluster, empty ones included. */
  readonly masters: readonly MasterFacts[];
  readonly moves: readonly SlotMove[];
  /** Each master's own IMPORTING/MIGRATING slots (ClusterSnapshot.openSlots). */
  readonly openSlots: readonly OpenSlot[];
}

/**
 * fix's engine, known before anything is read: keys for auto and keys, a refusal for atomic (its
 * repairs are hand-made SETSLOT, which Valkey forbids alongside server tasks).
 */
export function repairEngine(choice: EngineChoice): EngineCheck {
  switch (choice) {
    case EngineChoice.Auto:
    case EngineChoice.Keys:
      return { engine: MigrationEngine.Keys };
    case EngineChoice.Atomic:
      return { refusal: { kind: EngineRefusalKind.AtomicForRepairs } };
    default: {
      const never: never = choice;
      throw new Error(`unhandled engine choice: ${String(never)}`);
    }
  }
}

/** The engine the migration runs with, or the first reason the cluster cannot take it now. */
export function checkEngine(input: EngineCheckInput): EngineCheck {
  const { masters, moves } = input;
  let engine: MigrationEngine;
  if (input.repairsByHand) {
    const repair = repairEngine(input.choice);
    if (repair.refusal) return repair;
    engine = repair.engine;
  } else {
    const lacking = masters.filter((master) => master.serverMigrations === undefined).map((m) => m.node);
    engine = resolveEngine(input.choice, lacking.length === 0);
    if (engine === MigrationEngine.Atomic && lacking.length > 0)
      return { refusal: { kind: EngineRefusalKind.AtomicUnsupported, lacking } };
  }
  const holdings = tasksHoldingSlots(
    masters,
    moves.map((move) => move.slot),
  );
  if (holdings.length > 0) return { refusal: { kind: EngineRefusalKind.ServerTask, holdings } };
  switch (engine) {
    case MigrationEngine.Atomic: {
      const openSlots = openSlotsOnPlanNodes(input.openSlots, moves);
      if (openSlots.length > 0) return { refusal: { kind: EngineRefusalKind.OpenSlots, openSlots } };
      return { engine };
    }
    case MigrationEngine.Keys: {
      const nodes = mastersWithOtherDatabases(masters);
      if (nodes.length > 0) return { refusal: { kind: EngineRefusalKind.OtherDatabases, nodes } };
      return { engine };
    }
    default: {
      const never: never = engine;
      throw new Error(`unhandled migration engine: ${String(never)}`);
    }
  }
}

/**
 * Server tasks in progress, listed by any master, that hold any of these slots: one entry per task
 * (both ends list it under the same name; the source's entry is kept, it names the target).
 */
export function tasksHoldingSlots(
  masters: readonly Pick<MasterFacts, 'node' | 'serverMigrations'>[],
  slots: readonly number[],
): TaskHolding[] {
  const byName = new Map<string, { task: ServerMigration; listedBy: NodeRef; slots: Set<number> }>();
  for (const master of masters) {
    const inProgress = (master.serverMigrations ?? []).filter(isInProgress);
    if (inProgress.length === 0) continue;
    for (const slot of slots) {
      const task = taskHolding(inProgress, slot);
      if (task === undefined) continue;
      const known = byName.get(task.name);
      if (known === undefined) {
        byName.set(task.name, { task, listedBy: master.node, slots: new Set([slot]) });
        continue;
      }
      known.slots.add(slot);
      if (task.operation === ServerMigrationOperation.Export && known.task.operation !== task.operation) {
        known.task = task;
        known.listedBy = master.node;
      }
    }
  }
  return [...byName.values()].map(({ task, listedBy, slots: held }) => ({
    task,
    listedBy,
    slots: [...held].sort((a, b) => a - b),
  }));
}

/** Hand-made open slots (any slot, not only the plan's) on the plan's sources and targets. */
export function openSlotsOnPlanNodes(
  openSlots: readonly OpenSlot[],
  moves: readonly SlotMove[],
): OpenSlotOnNode[] {
  const planNodes = new Map<string, NodeRef>();
  for (const move of moves) {
    planNodes.set(move.source.id, move.source);
    planNodes.set(move.target.id, move.target);
  }
  return openSlots.flatMap((open) => {
    const node = planNodes.get(open.nodeId);
    return node === undefined ? [] : [{ ...open, node }];
  });
}

/** Masters holding keys in a database other than 0, with those databases. */
export function mastersWithOtherDatabases(
  masters: readonly Pick<MasterFacts, 'node' | 'databases'>[],
): NodeDatabases[] {
  return masters.flatMap((master) => {
    const databases = databasesBeyondZero(master.databases);
    return databases.length > 0 ? [{ node: master.node, databases }] : [];
  });
}
