import { describe, expect, it } from 'vitest';
import { finalizeJob, migrateJob, slotJobData } from '../../src/shared/queue/jobs.js';

const move = {
  slot: 7,
  source: { id: 'a'.repeat(40), host: '127.0.0.1', port: 7000 },
  target: { id: 'b'.repeat(40), host: '127.0.0.1', port: 7001 },
};

describe('slot job data', () => {
  it('carries replace: true only when the migration asked for it', () => {
    expect(slotJobData('m1', 'default', move, { replace: true }).replace).toBe(true);
    expect('replace' in slotJobData('m1', 'default', move)).toBe(false);
    expect('replace' in slotJobData('m1', 'default', move, { replace: false })).toBe(false);
  });

  it('names the job after the migration and the slot, and never holds credentials', () => {
    const job = migrateJob(slotJobData('m1', 'default', move), { attempts: 8, backoffMs: 500 });
    expect(job.opts.jobId).toBe('m1-slot-7');
    expect(JSON.stringify(job.data)).not.toMatch(/password|redis:\/\//);
  });
});

describe('finalize job ids', () => {
  const policy = { attempts: 8, backoffMs: 500 };
  const slots = (reruns: (number | undefined)[]) =>
    reruns.map((rerun, index) => ({
      ...slotJobData('m1', 'default', { ...move, slot: 100 + index }),
      ...(rerun === undefined ? {} : { rerun }),
    }));
  const idOf = (reruns: (number | undefined)[]) =>
    finalizeJob({ migrationId: 'm1', cluster: 'default', slots: slots(reruns) }, policy).opts.jobId;

  it('is the same for the same slots: a batch added twice is one job', () => {
    expect(idOf([undefined, undefined])).toBe(idOf([undefined, undefined]));
    expect(idOf([undefined, undefined])).toMatch(/^m1-final-100-2-[0-9a-f]{12}$/);
    expect(idOf([undefined])).not.toBe(idOf([undefined, undefined]));
  });

  it('differs once a slot was run again by the stranded-slot sweep, and with each rerun', () => {
    const ids = new Set([idOf([undefined, undefined]), idOf([1, undefined]), idOf([2, undefined])]);
    expect(ids.size).toBe(3);
  });
});
