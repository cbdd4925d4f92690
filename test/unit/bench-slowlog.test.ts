import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { scriptNamesBySha, slowlogCommand } from '../../src/bench/slowlog.js';
import { NODE_SCRIPTS } from '../../src/shared/cluster/slot-commands.js';

describe("the bench's slowlog names", () => {
  const names = scriptNamesBySha(NODE_SCRIPTS);

  it('names each cluster script by the SHA1 EVALSHA shows', () => {
    const sha = createHash('sha1').update(NODE_SCRIPTS.slotfleetMigrateBatch.lua).digest('hex');
    expect(slowlogCommand(['EVALSHA', sha, '0', '7', '1000'], names)).toBe('evalsha slotfleetMigrateBatch');
    expect(names.size).toBe(Object.keys(NODE_SCRIPTS).length);
  });

  it('says when a script is not one of them, and keeps cluster subcommands apart', () => {
    expect(slowlogCommand(['evalsha', 'f'.repeat(40), '0'], names)).toBe('evalsha (another script)');
    expect(slowlogCommand(['CLUSTER', 'SETSLOT', '5', 'NODE', 'abc'], names)).toBe('cluster setslot');
    expect(slowlogCommand(['MIGRATE', '127.0.0.1', '7001'], names)).toBe('migrate');
  });
});
