/**
 * The migration record's slot part (SlotRecords) in memory, with the rules of MigrationStore's
 * SET_STEP_SCRIPT: a slot that ended done or cancelled stays so (a late write returns false and
 * counts nothing), and done clears the error an earlier attempt recorded.
 */
import { countSteps, type MigrationState, migrationState } from '../../src/shared/domain/migration.js';
import { SlotStep } from '../../src/shared/domain/slot-migration.js';
import type { SlotRecords } from '../../src/shared/queue/migration-store.js';

export interface MemoryMigrationRecord {
  readonly steps: Map<number, SlotStep>;
  keysMoved: number;
  readonly errors: Map<number, { code: string; message: string }>;
  /** Every step written, in order, including refused late writes (written: false). */
  readonly writes: { slot: number; step: SlotStep; keysMoved: number; written: boolean }[];
}

export class MemorySlotRecords implements SlotRecords {
  private readonly records = new Map<string, MemoryMigrationRecord>();

  record(id: string): MemoryMigrationRecord {
    let record = this.records.get(id);
    if (!record) {
      record = { steps: new Map(), keysMoved: 0, errors: new Map(), writes: [] };
      this.records.set(id, record);
    }
    return record;
  }

  stepOf(id: string, slot: number): SlotStep | undefined {
    return this.record(id).steps.get(slot);
  }

  /** The migration's state as the API derives it from its slots' steps. */
  stateOf(id: string, slotsTotal: number): MigrationState {
    const steps = [...this.record(id).steps.values()];
    const pending = Array.from({ length: slotsTotal - steps.length }, () => SlotStep.Pending);
    return migrationState(countSteps([...steps, ...pending]));
  }

  async setSlotStep(
    id: string,
    _cluster: string,
    slot: number,
    step: SlotStep,
    keysMoved = 0,
  ): Promise<boolean> {
    const record = this.record(id);
    if (step === SlotStep.Done) record.errors.delete(slot);
    const current = record.steps.get(slot);
    const ended = current === SlotStep.Done || current === SlotStep.Cancelled;
    record.writes.push({ slot, step, keysMoved, written: !ended });
    // As SET_STEP_SCRIPT: keys moved count even when the step comes too late to be written.
    record.keysMoved += keysMoved;
    if (ended) return false;
    record.steps.set(slot, step);
    return true;
  }

  async addKeysMoved(id: string, keys: number): Promise<void> {
    this.record(id).keysMoved += keys;
  }

  async recordSlotError(id: string, slot: number, error: { code: string; message: string }): Promise<void> {
    this.record(id).errors.set(slot, { code: error.code, message: error.message });
  }
}
