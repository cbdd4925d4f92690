import { describe, expect, it } from 'vitest';
import { migrateJob, slotJobData } from '../../src/shared/queue/jobs.js';

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
