/**
 * One run of one slot through the state machine of src/shared/domain/slot-migration.ts: observe,
 * ask the machine for the next action, perform it, repeat. Used by both the migrate job (up to
 * drained) and the finalizer job (up to done); both are safe to re-run at any point because every
 * run starts from a fresh observation of the cluster.
 *
 * A SlotRun owns what used to be loose variables of one long loop:
 *   - the slot's source and target as they are now: a failover replaces one by its promoted replica
 *     (adoption, see observe());
 *   - the observation, and whether it came from the cluster (fresh) or from our own prediction of
 *     what an action did (afterAction). The one irreversible action, AssignTarget, is only taken from
 *     a fresh one, and Done is only believed from a fresh look at every master;
 *   - the step last written to the migration's record, and the keys moved not yet counted there.
 * Transitions are checked: a prediction never takes the slot back to an earlier step, except the
 * action that exists to do so (ResetImport), so a wrong prediction fails the run instead of acting
 * on it.
 */
import { type ObserveOptions, observeSlot } from '../shared/cluster/observe-slot.js';
import {
  afterAction,
  nextSlotAction,
  predictionRegresses,
  type SlotAction,
  SlotActionKind,
  type SlotObservation,
  SlotPhase,
  SlotStep,
  stepOf,
} from '../shared/domain/slot-migration.js';
import { formatSlotRanges } from '../shared/domain/slots.js';
import { nodeAddress } from '../shared/domain/topology.js';
import { ErrorCode, errorCodeOf, SlotfleetError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { OpeningState, SlotRecords } from '../shared/queue/migration-store.js';
import type { SlotJobData } from '../shared/queue/names.js';
import { type DrainDeps, drainSlot } from './drain.js';

export interface SlotRunDeps extends DrainDeps {
  readonly store: SlotRecords;
  /** Called before each action is performed; tests use it to interrupt a slot between two steps. */
  readonly beforeAction?: (action: SlotAction, observation: SlotObservation) => void | Promise<void>;
  /**
   * How long a finalizer waits in place for config epochs (or the target's view of the owner) to
   * settle, and how often it looks, before it fails the attempt as NOT_CONVERGED and hands the slot
   * back to BullMQ's retries. @defaultValue EPOCH_WAIT
   */
  readonly epochWait?: { readonly waitMs: number; readonly pollMs: number };
  /**
   * Slots of the same source -> target pair to open together with this one (claimed pending in the
   * record, so no other run opens them too): their IMPORTING go to the target in this slot's write,
   * then their MIGRATING to the source in one more. Their own runs find them open and go on to drain.
   * One write of many SETSLOTs costs a node one cluster-config save, not one per slot (Valkey's
   * atomic save costs 4-12x Redis 7.0's: docs/valkey-classic-path.md). Absent: one slot at a time.
   */
  readonly openAhead?: OpenAhead;
}

/**
 * The keys engine's blocks (SLOTFLEET_OPEN_SLOTS_TOGETHER): the job of a block's first slot claims
 * the block's other slots still pending, opens them with its own, moves their keys and hands them
 * to their finalizer; their own jobs wait for it (OpeningWatch) and end at once (keys-mover.ts).
 */
export interface OpenAhead {
  /** Claims this slot's block (stamped in the record); none unless it is a block's first slot. */
  claim(data: SlotJobData): Promise<readonly number[]>;
  /** Gives claimed slots back: their own jobs run them. */
  release(data: SlotJobData, slots: readonly number[]): Promise<void>;
  /** Still held: the stamps are renewed, so their jobs go on waiting. */
  renew(data: SlotJobData, slots: readonly number[]): Promise<void>;
  /** Their keys moved and their step is recorded: adds their finalize job and tells their jobs. */
  handOn(data: SlotJobData, slots: readonly number[]): Promise<void>;
  /** Resolves once no other job holds this job's slot; onHeld is called if it has to wait. */
  settled(data: SlotJobData, onHeld: () => void): Promise<OpeningState>;
}

/** The finalizer's wait for gossip: long enough for a few cluster-bus PINGs, short of a job's lock. */
export const EPOCH_WAIT = { waitMs: 5_000, pollMs: 50 } as const;

export interface SlotRunResult {
  readonly keysMoved: number;
  readonly step: SlotStep;
  /** Drained by the job that opened it, which added its finalize job too: nothing is left to add. */
  readonly handedOn?: boolean;
}

/** More actions than any honest run needs: a guard against a cluster that keeps changing under us. */
const MAX_ACTIONS = 64;
/** Successors adopted in one observation at most (a source and a target both failing over). */
const MAX_ADOPTIONS = 2;

/** Runs one slot, one phase: see SlotRun. */
export function driveSlot(planned: SlotJobData, phase: SlotPhase, deps: SlotRunDeps): Promise<SlotRunResult> {
  return new SlotRun(planned, phase, deps).run();
}

export class SlotRun {
  /** The source and target as they are now (a failover replaces one by its promoted replica). */
  private data: SlotJobData;
  /** Ids of the nodes this run replaced by their successors. */
  private readonly replaced: string[] = [];
  private readonly log: Logger;
  private recordedStep: SlotStep;
  private keysMoved = 0;
  /** Keys moved whose count is not in the record yet: it goes with the next step written. */
  private keysToRecord = 0;
  /** Slots of this slot's block claimed to be opened with it (OpenAhead.claim). */
  readonly claimed: number[] = [];
  /** Those of them the target imports and the source redirects now. */
  readonly opened: number[] = [];

  constructor(
    planned: SlotJobData,
    private readonly phase: SlotPhase,
    private readonly deps: SlotRunDeps,
  ) {
    this.data = planned;
    this.log = deps.log;
    // A migrate job starts from pending, a finalizer from the drained (migrating) step its migrate
    // job wrote; a job that observes anything else (a re-run after a crash) writes what it sees at
    // its first wait or end.
    this.recordedStep = phase === SlotPhase.Migrate ? SlotStep.Pending : SlotStep.Migrating;
  }

  async run(): Promise<SlotRunResult> {
    const { phase } = this;
    // The other masters' opinions are read only to verify the end: before that, the finalizer sends
    // them SETSLOT NODE unconditionally (idempotent), which is cheaper than asking each first.
    const includeOthers = false;
    let observation = await this.observe({ includeOthers });
    if (phase === SlotPhase.Migrate && observation.target.owner === this.data.target.id) {
      // A re-run after the finalizer started: count, so that a finished slot gets no command at all.
      observation = await this.observe({ includeOthers, countKeys: true });
    }
    if (phase === SlotPhase.Finalize && observation.target.owner === this.data.target.id) {
      // A re-run of a slot the target already owns: ask the others instead of assigning blindly, so
      // that re-running a finished slot sends no command at all.
      observation = await this.observe({ includeOthers: true });
    }
    let fresh = true;
    let verified = false;
    const epochWait = this.deps.epochWait ?? EPOCH_WAIT;
    const epochDeadline = Date.now() + epochWait.waitMs;
    let performed = 0;
    while (performed < MAX_ACTIONS) {
      const step = stepOf(observation);
      const action = nextSlotAction(observation, phase);
      switch (action.kind) {
        case SlotActionKind.Drained:
          this.recordInBackground(step);
          return { keysMoved: this.keysMoved, step };
        case SlotActionKind.Done:
          // Done is only believed from a fresh look at every master, not from our own predictions.
          if (verified) {
            await this.record(step);
            return { keysMoved: this.keysMoved, step };
          }
          observation = await this.observe({ includeOthers: true });
          fresh = true;
          verified = true;
          performed++;
          continue;
        case SlotActionKind.AwaitEpoch:
        case SlotActionKind.AwaitOwner:
          // Waiting is not an action: it does not count against MAX_ACTIONS, the deadline bounds it.
          verified = false;
          this.recordInBackground(step);
          if (Date.now() > epochDeadline) throw new SlotfleetError(ErrorCode.NotConverged, action.reason);
          this.log.debug({ reason: action.reason }, 'waiting for the cluster to agree');
          await new Promise((resolve) => setTimeout(resolve, epochWait.pollMs));
          observation = await this.observe({ includeOthers });
          fresh = true;
          continue;
        default:
          break;
      }
      verified = false;
      await this.deps.beforeAction?.(action, observation);
      performed++;
      if (action.kind === SlotActionKind.AssignTarget && !fresh) {
        // The one irreversible step: only from a fresh observation, never from a prediction.
        observation = await this.observe({ includeOthers });
        fresh = true;
        continue;
      }
      const predicted = await this.perform(action, observation, step);
      fresh = predicted === undefined;
      observation = predicted ?? (await this.observe({ includeOthers }));
    }
    throw new SlotfleetError(
      ErrorCode.NotConverged,
      `slot ${this.data.slot} did not settle after ${MAX_ACTIONS} actions: the cluster keeps changing`,
    );
  }

  /**
   * Performs one action and returns the observation it leads to (a prediction), or undefined when
   * only a fresh look can tell. AssignSource also sends AssignOthers when that is what follows:
   * assigning the other masters is as safe once the target claimed the slot with the higher epoch,
   * and saves a round trip per slot.
   */
  private async perform(
    action: SlotAction,
    observation: SlotObservation,
    step: SlotStep,
  ): Promise<SlotObservation | undefined> {
    const { cluster } = this.deps;
    const { data } = this;
    switch (action.kind) {
      case SlotActionKind.SetImporting: {
        const companions = (await this.deps.openAhead?.claim(data)) ?? [];
        this.claimed.push(...companions);
        await Promise.all([
          cluster.setSlotImporting(data.target, data.slot, data.source.id),
          companions.length > 0 ? this.openCompanions(companions) : undefined,
        ]);
        break;
      }
      case SlotActionKind.SetMigrating:
        await cluster.setSlotMigrating(data.source, data.slot, data.target.id);
        break;
      case SlotActionKind.ResetImport:
        this.log.warn('closing an IMPORTING that names a failed-over source, to import from its successor');
        await cluster.setSlotStable(data.target, data.slot);
        break;
      case SlotActionKind.MigrateKeys: {
        // Most slots drain in one batch: the step is recorded only if the drain takes longer.
        const drained = await drainSlot(data, this.deps, () => this.recordInBackground(step));
        this.keysMoved += drained.moved;
        this.keysToRecord += drained.unrecorded;
        break;
      }
      case SlotActionKind.AssignTarget:
        this.log.debug({ epochs: observation.epochs }, 'assigning slot to target');
        // SETSLOT NODE on the target first: it bumps the target's config epoch, so its claim wins.
        await cluster.setSlotNode(data.target, data.slot, data.target.id);
        break;
      case SlotActionKind.AssignSource: {
        const assigned = this.predict(observation, action);
        const following = nextSlotAction(assigned, this.phase);
        const others = following.kind === SlotActionKind.AssignOthers ? following : undefined;
        // A source giving away its last slot may hear the target's claim first and turn into its
        // replica (Redis 7.0 replica migration), which refuses SETSLOT with READONLY ("Please use
        // SETSLOT only with masters"). Nothing is wrong: a fresh look shows the slot settled.
        const sourceAssigned = cluster.setSlotNode(data.source, data.slot, data.target.id).then(
          () => true,
          (error: unknown) => {
            if (errorCodeOf(error) === ErrorCode.ReadOnly) return false;
            throw error;
          },
        );
        // Awaited below; a throwing beforeAction must not leave its rejection unhandled.
        sourceAssigned.catch(() => undefined);
        if (others) await this.deps.beforeAction?.(others, assigned);
        const [onSource] = await Promise.all([
          sourceAssigned,
          others ? this.assignOthers(observation, others.nodeIds) : undefined,
        ]);
        if (!onSource) {
          this.log.info(
            'the source turned replica before its SETSLOT NODE (its last slot left): looking again',
          );
          return undefined;
        }
        return others ? this.predict(assigned, others) : assigned;
      }
      case SlotActionKind.AssignOthers:
        await this.assignOthers(observation, action.nodeIds);
        break;
      case SlotActionKind.Fail:
        throw new SlotfleetError(action.code, action.message);
      case SlotActionKind.Drained:
      case SlotActionKind.Done:
      case SlotActionKind.AwaitEpoch:
      case SlotActionKind.AwaitOwner:
        throw new Error(`${action.kind} is handled by the run loop, not performed`);
      default: {
        const never: never = action;
        throw new Error(`unhandled slot action: ${JSON.stringify(never)}`);
      }
    }
    return this.predict(observation, action);
  }

  /**
   * Opens slots of this pair for their own runs: IMPORTING on the target (in the same write as this
   * slot's), then, for those the target accepted, MIGRATING on the source, in one write each (the
   * node connections send what is asked within a millisecond together). The order is the state
   * machine's: the target imports before the source redirects. A refusal leaves that slot to its own
   * run, which observes and decides.
   */
  private async openCompanions(slots: readonly number[]): Promise<void> {
    const { cluster } = this.deps;
    const { source, target } = this.data;
    const importing = await Promise.allSettled(
      slots.map((slot) => cluster.setSlotImporting(target, slot, source.id)),
    );
    const opened = slots.filter((_, index) => importing[index]!.status === 'fulfilled');
    const migrating = await Promise.allSettled(
      opened.map((slot) => cluster.setSlotMigrating(source, slot, target.id)),
    );
    const refused = [...importing, ...migrating].filter((outcome) => outcome.status === 'rejected').length;
    this.opened.push(...opened.filter((_, index) => migrating[index]!.status === 'fulfilled'));
    this.log.debug({ slots: formatSlotRanges(opened), refused }, 'opened slots of the pair ahead');
  }

  /** True once a failover made this run continue with a successor of its source or target. */
  get adopted(): boolean {
    return this.replaced.length > 0;
  }

  /** afterAction, checked: a prediction that takes the slot back a step is a bug, not a state. */
  private predict(observation: SlotObservation, action: SlotAction): SlotObservation {
    const next = afterAction(observation, action);
    if (predictionRegresses(observation, next, action)) {
      throw new SlotfleetError(
        ErrorCode.InvalidState,
        `slot ${this.data.slot}: ${action.kind} would take it from ${stepOf(observation)} back to ${stepOf(next)}`,
      );
    }
    return next;
  }

  /**
   * A fresh observation, after adopting the successor of a source or target that failed over: the
   * node at the planned address answers as a replica of a master that the cluster knows, so that
   * master holds the slot's keys (replicated) and continues the migration. The state machine then
   * sets IMPORTING / MIGRATING again, naming the successor (Redis keeps neither across a failover).
   */
  private async observe(options: ObserveOptions): Promise<SlotObservation> {
    for (let adoptions = 0; ; adoptions++) {
      // A migrate job needs no key count: emptiness is what its drain establishes (the batch script
      // that finds no key), and only the finalizer assigns the slot, from a counted observation.
      const observed = await observeSlot(
        this.deps.cluster,
        this.data.slot,
        this.data.source,
        this.data.target,
        {
          ...options,
          countKeys: options.countKeys ?? this.phase !== SlotPhase.Migrate,
        },
      );
      const stale = !observed.source.isMaster ? 'source' : !observed.target.isMaster ? 'target' : undefined;
      if (stale === undefined || adoptions >= MAX_ADOPTIONS) return { ...observed, replaced: this.replaced };
      const successorId = observed[stale].masterId;
      // A source that lost its last slot to the target follows the target (Redis 7.0 replica
      // migration): not a failover, the state machine knows it is done with that node.
      if (successorId === this.data.source.id || successorId === this.data.target.id) {
        return { ...observed, replaced: this.replaced };
      }
      const successor = observed.others.find((other) => other.nodeId === successorId);
      if (!successor) {
        // A replica whose master is not (yet) a healthy master in the source's view: gossip has not
        // settled since the failover. Retryable; the next attempt looks again.
        throw new SlotfleetError(
          ErrorCode.NotConverged,
          `the ${stale} of slot ${this.data.slot} (${nodeAddress(this.data[stale])}) is now a replica of ` +
            `${successorId ?? 'no master'}, which the cluster does not list as a master yet`,
        );
      }
      this.log.warn(
        { role: stale, from: nodeAddress(this.data[stale]), to: nodeAddress(successor) },
        'failed over: continuing with its promoted replica',
      );
      this.replaced.push(this.data[stale].id);
      this.data = {
        ...this.data,
        [stale]: { id: successor.nodeId, host: successor.host, port: successor.port },
      };
    }
  }

  /**
   * The record is written when a slot is about to wait (a drain, config epochs) and when the job
   * ends: steps that pass in a millisecond are not worth a control-Redis write each.
   */
  private record(step: SlotStep): Promise<boolean> | undefined {
    if (step === this.recordedStep && this.keysToRecord === 0) return undefined;
    if (step !== this.recordedStep) this.log.debug({ from: this.recordedStep, to: step }, 'slot step');
    const { data } = this;
    const write = this.deps.store.setSlotStep(
      data.migrationId,
      data.cluster,
      data.slot,
      step,
      this.keysToRecord,
    );
    this.recordedStep = step;
    this.keysToRecord = 0;
    return write;
  }

  /**
   * Written without waiting (the control connection keeps them in order), except Done: the
   * migration's state is derived from it.
   */
  private recordInBackground(step: SlotStep): void {
    this.record(step)?.catch((error: Error) => this.log.warn({ err: error.message }, 'recording slot step'));
  }

  /** SETSLOT NODE on the other masters, at the addresses the source's view gave them. */
  private async assignOthers(observation: SlotObservation, nodeIds: readonly string[]): Promise<void> {
    const { cluster } = this.deps;
    await Promise.all(
      observation.others
        .filter((other) => nodeIds.includes(other.nodeId))
        .map((other) => cluster.setSlotNode(other, this.data.slot, this.data.target.id)),
    );
  }
}
