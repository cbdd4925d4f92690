/**
 * Drives one slot through the state machine of src/shared/domain/slot-migration.ts against the
 * cluster: observe, ask the machine for the next action, perform it, repeat. Used by both the
 * migrate job (up to drained) and the finalizer job (up to done); both are safe to re-run at any
 * point because every run starts from a fresh observation of the cluster.
 */
import type { ClusterAdapter } from '../shared/cluster/adapter.js';
import {
  afterAction,
  nextSlotAction,
  type SlotAction,
  SlotActionKind,
  type SlotObservation,
  SlotPhase,
  SlotStep,
  stepOf,
} from '../shared/domain/slot-migration.js';
import { ErrorCode, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Metrics } from '../shared/metrics.js';
import type { MigrationStore } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';

export interface SlotEngineSettings {
  readonly batchKeys: number;
  readonly batchesInFlight: number;
  readonly migrateTimeoutMs: number;
}

export interface SlotEngineDeps {
  readonly adapter: ClusterAdapter;
  readonly store: MigrationStore;
  readonly metrics: Metrics;
  readonly settings: SlotEngineSettings;
  readonly log: Logger;
  /** True when the operator paused the migration: draining stops after the batches in flight. */
  readonly isPaused?: () => Promise<boolean>;
  /** Called before each action is performed; tests use it to interrupt a slot between two steps. */
  readonly beforeAction?: (action: SlotAction, observation: SlotObservation) => void | Promise<void>;
}

/** Thrown between two batches when the migration was paused; the processor postpones the job. */
export class PauseRequested extends Error {
  constructor() {
    super('migration paused');
    this.name = 'PauseRequested';
  }
}

export interface SlotRunResult {
  readonly keysMoved: number;
  readonly step: SlotStep;
}

/** More actions than any honest run needs: a guard against a cluster that keeps changing under us. */
const MAX_ACTIONS = 64;
/** How long a finalizer waits in place for config epochs to settle before handing back to BullMQ. */
const EPOCH_WAIT_MS = 5_000;
const EPOCH_POLL_MS = 50;

export async function driveSlot(
  data: SlotJobData,
  phase: SlotPhase,
  deps: SlotEngineDeps,
): Promise<SlotRunResult> {
  const { adapter, store, log } = deps;
  // The other masters' opinions are read only to verify the end: before that, the finalizer sends
  // them SETSLOT NODE unconditionally (idempotent), which is cheaper than asking each first.
  const includeOthers = false;
  let observation = await adapter.observeSlot(data.slot, data.source, data.target, { includeOthers });
  if (phase === SlotPhase.Finalize && observation.target.owner === data.target.id) {
    // A re-run of a slot the target already owns: ask the others instead of assigning blindly, so
    // that re-running a finished slot sends no command at all.
    observation = await adapter.observeSlot(data.slot, data.source, data.target, { includeOthers: true });
  }
  // True while `observation` came from the cluster rather than from our predictions.
  let fresh = true;
  let recordedStep: SlotStep | undefined;
  let keysMoved = 0;
  let verified = false;
  const epochDeadline = Date.now() + EPOCH_WAIT_MS;
  for (let performed = 0; performed < MAX_ACTIONS; performed++) {
    const step = stepOf(observation);
    if (step !== recordedStep) {
      log.info({ from: recordedStep ?? 'observed', to: step }, 'slot step');
      // Intermediate steps are for watching: written without waiting (the control connection keeps
      // them in order). The end step is waited for: the migration's state is derived from it.
      const write = store.setSlotStep(data.migrationId, data.cluster, data.slot, step);
      if (step === SlotStep.Done) await write;
      else write.catch((error: Error) => log.warn({ err: error.message }, 'recording slot step'));
      recordedStep = step;
    }
    const action = nextSlotAction(observation, phase);
    if (action.kind === SlotActionKind.Drained) return { keysMoved, step };
    if (action.kind === SlotActionKind.Done) {
      // Done is only believed from a fresh look at every master, not from our own predictions.
      if (verified) return { keysMoved, step };
      observation = await adapter.observeSlot(data.slot, data.source, data.target, { includeOthers: true });
      fresh = true;
      verified = true;
      continue;
    }
    verified = false;
    if (action.kind === SlotActionKind.AwaitEpoch) {
      if (Date.now() > epochDeadline) throw new SlotfleetError(ErrorCode.NotConverged, action.reason);
      log.debug({ reason: action.reason }, 'waiting for config epochs');
      await new Promise((resolve) => setTimeout(resolve, EPOCH_POLL_MS));
      performed--;
      observation = await adapter.observeSlot(data.slot, data.source, data.target, { includeOthers });
      fresh = true;
      continue;
    }
    await deps.beforeAction?.(action, observation);
    switch (action.kind) {
      case SlotActionKind.SetImporting:
        await adapter.setSlotImporting(data.target, data.slot, data.source.id);
        break;
      case SlotActionKind.SetMigrating:
        await adapter.setSlotMigrating(data.source, data.slot, data.target.id);
        break;
      case SlotActionKind.MigrateKeys:
        keysMoved += await drainSlot(data, deps);
        break;
      case SlotActionKind.AssignTarget: {
        // The one irreversible step: only from a fresh observation, never from a prediction.
        if (!fresh) {
          observation = await adapter.observeSlot(data.slot, data.source, data.target, { includeOthers });
          fresh = true;
          continue;
        }
        log.info({ epochs: observation.epochs }, 'assigning slot to target');
        // SETSLOT NODE on the target first: it bumps the target's config epoch, so its claim wins.
        await adapter.setSlotNode(data.target, data.slot, data.target.id);
        break;
      }
      case SlotActionKind.AssignSource:
        await adapter.setSlotNode(data.source, data.slot, data.target.id);
        break;
      case SlotActionKind.AssignOthers: {
        const masters = await adapter.masters();
        await Promise.all(
          action.nodeIds.map((nodeId) => {
            const node = masters.find((master) => master.id === nodeId);
            return node ? adapter.setSlotNode(node, data.slot, data.target.id) : Promise.resolve();
          }),
        );
        break;
      }
      case SlotActionKind.Fail:
        throw new SlotfleetError(action.code, action.message);
      default: {
        const never: never = action;
        throw new Error(`unhandled slot action: ${JSON.stringify(never)}`);
      }
    }
    observation = afterAction(observation, action);
    fresh = false;
  }
  throw new SlotfleetError(
    ErrorCode.NotConverged,
    `slot ${data.slot} did not settle after ${MAX_ACTIONS} actions: the cluster keeps changing`,
  );
}

/**
 * GETKEYSINSLOT + MIGRATE until the source holds no key of the slot. Several MIGRATE batches are in
 * flight at once on the source's connection, so the source never waits for a round trip between
 * them. GETKEYSINSLOT returns the same keys until they are gone, so each round asks for as many keys
 * as the batches in flight will carry.
 */
export async function drainSlot(data: SlotJobData, deps: SlotEngineDeps): Promise<number> {
  const { adapter, store, metrics, settings } = deps;
  const labels = { cluster: data.cluster, source: address(data.source), target: address(data.target) };
  // Exported at zero before the first batch, so rate() and increase() see the first keys and timeouts.
  metrics.keysMigrated.inc(labels, 0);
  metrics.migrateTimeouts.inc(labels, 0);
  let moved = 0;
  for (;;) {
    if (moved > 0 && (await deps.isPaused?.())) throw new PauseRequested();
    const keys = await adapter.getKeysInSlot(
      data.source,
      data.slot,
      settings.batchKeys * settings.batchesInFlight,
    );
    if (keys.length === 0) return moved;
    const batches: Buffer[][] = [];
    for (let start = 0; start < keys.length; start += settings.batchKeys) {
      batches.push(keys.slice(start, start + settings.batchKeys));
    }
    const results = await Promise.allSettled(
      batches.map(async (batch) => {
        const stopTimer = metrics.migrateBatchDuration.startTimer({ cluster: data.cluster });
        try {
          return await adapter.migrate(data.source, data.target, batch, {
            timeoutMs: settings.migrateTimeoutMs,
          });
        } finally {
          stopTimer();
        }
      }),
    );
    let roundMoved = 0;
    let firstError: unknown;
    for (const result of results) {
      if (result.status === 'fulfilled') roundMoved += result.value;
      else {
        firstError ??= result.reason;
        if (result.reason instanceof SlotfleetError && result.reason.code === ErrorCode.IoError) {
          metrics.migrateTimeouts.inc(labels);
        }
      }
    }
    moved += roundMoved;
    metrics.keysMigrated.inc(labels, roundMoved);
    // Not waited for: the slot's end step, written later on the same connection, is.
    store
      .addKeysMoved(data.migrationId, roundMoved)
      .catch((error: Error) => deps.log.warn({ err: error.message }, 'counting keys moved'));
    if (firstError !== undefined) throw firstError;
  }
}

function address(node: { host: string; port: number }): string {
  return `${node.host}:${node.port}`;
}
