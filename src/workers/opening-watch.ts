/**
 * Where the slot jobs of one worker process find out whether another job holds their slot: the job of
 * a block's first slot opens the block's slots and moves their keys (keys-mover.ts), and their own
 * jobs wait for it instead of running the slot themselves. One read of the record per poll serves
 * every job of the process that asks or waits (SlotOpenings.openingStates), and the process' own
 * openers say at once what they did.
 */
import type { Logger } from '../shared/logger.js';
import { OpeningState, type SlotOpenings, TASK_CLAIM_GRACE_MS } from '../shared/queue/migration-store.js';

/** How often the slots still held are looked at again: a block moves in tens of milliseconds. */
export const OPENING_POLL_MS = 25;

/**
 * A read of the record that took longer than this waited for the control Redis: openers renew their
 * claims every second (keys-mover.ts), and could not while it was away.
 */
export const OUTAGE_READ_MS = 1_000;

interface Waiter {
  readonly slot: number;
  readonly resolve: (state: OpeningState) => void;
  readonly onHeld: () => void;
  held: boolean;
}

export class OpeningWatch {
  /** migration id -> its jobs waiting for an answer. */
  private readonly waiting = new Map<string, Waiter[]>();
  private polling = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /**
   * Until then a Free answer is not taken: the control Redis was away, so no opener could renew its
   * claims, and a claim that lapsed meanwhile says nothing about its opener. Living openers renew
   * within a second of its return; a dead one's claims lapse again within the grace after it.
   */
  private freeDistrustedUntil = 0;

  constructor(
    private readonly openings: Pick<SlotOpenings, 'openingStates'>,
    private readonly log: Logger,
    private readonly pollMs = OPENING_POLL_MS,
  ) {}

  /**
   * Resolves once no opener holds the slot: Free (the job runs it) or HandedOn (nothing left to do).
   * onHeld is called once if it has to wait first.
   */
  settled(migrationId: string, slot: number, onHeld: () => void): Promise<OpeningState> {
    return new Promise((resolve) => {
      let waiters = this.waiting.get(migrationId);
      if (!waiters) {
        waiters = [];
        this.waiting.set(migrationId, waiters);
      }
      waiters.push({ slot, resolve, onHeld, held: false });
      this.schedule(0);
    });
  }

  /** An opener of this process changed these slots: its waiters here need not wait for a poll. */
  notify(migrationId: string, slots: readonly number[], state: OpeningState): void {
    if (state === OpeningState.Held) return;
    const set = new Set(slots);
    this.settle(migrationId, (waiter) => (set.has(waiter.slot) ? state : undefined));
  }

  /** The worker stops: waiting jobs run their slots themselves (they hand them back as stopping). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const id of [...this.waiting.keys()]) this.settle(id, () => OpeningState.Free);
  }

  private schedule(delayMs: number): void {
    if (this.polling || this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.poll();
    }, delayMs);
  }

  private async poll(): Promise<void> {
    this.polling = true;
    try {
      for (const [migrationId, waiters] of [...this.waiting]) {
        const slots = [...new Set(waiters.map((waiter) => waiter.slot))];
        let states: OpeningState[];
        const askedAt = Date.now();
        try {
          states = await this.openings.openingStates(migrationId, slots);
        } catch (error) {
          // The control Redis is away: the waiters keep waiting, and the next poll asks again.
          this.log.warn({ migrationId, err: (error as Error).message }, 'reading slots opened ahead');
          this.distrustFree();
          continue;
        }
        if (Date.now() - askedAt > OUTAGE_READ_MS) this.distrustFree();
        const freeTrusted = Date.now() >= this.freeDistrustedUntil;
        const stateOf = new Map(slots.map((slot, index) => [slot, states[index]!]));
        this.settle(migrationId, (waiter) => {
          const state = stateOf.get(waiter.slot);
          if (state === OpeningState.Free && !freeTrusted) return undefined;
          if (state !== OpeningState.Held) return state;
          if (!waiter.held) {
            waiter.held = true;
            waiter.onHeld();
          }
          return undefined;
        });
      }
    } finally {
      this.polling = false;
      if (this.waiting.size > 0) this.schedule(this.pollMs);
    }
  }

  private distrustFree(): void {
    this.freeDistrustedUntil = Date.now() + TASK_CLAIM_GRACE_MS;
  }

  /** Resolves the waiters of a migration that decide() answers for, keeps the others. */
  private settle(migrationId: string, decide: (waiter: Waiter) => OpeningState | undefined): void {
    const waiters = this.waiting.get(migrationId);
    if (!waiters) return;
    const still: Waiter[] = [];
    for (const waiter of waiters) {
      const state = decide(waiter);
      if (state === undefined) still.push(waiter);
      else waiter.resolve(state);
    }
    if (still.length > 0) this.waiting.set(migrationId, still);
    else this.waiting.delete(migrationId);
  }
}
