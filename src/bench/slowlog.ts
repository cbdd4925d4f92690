/**
 * Naming SLOWLOG entries for the bench's --slowlog report: a script by the name it is defined with
 * (its SHA1 is what EVALSHA shows), a cluster subcommand with its command. Pure, so it is tested
 * without a server.
 */
import { createHash } from 'node:crypto';

/** SHA1 of each script's source -> its name, for scripts defined as { name: { lua } }. */
export function scriptNamesBySha(
  scripts: Readonly<Record<string, { readonly lua: string }>>,
): Map<string, string> {
  return new Map(
    Object.entries(scripts).map(([name, { lua }]) => [createHash('sha1').update(lua).digest('hex'), name]),
  );
}

/** What a slowlog entry ran: "cluster setslot", "evalsha slotfleetMigrateBatch", "migrate". */
export function slowlogCommand(args: readonly string[], scriptNames: ReadonlyMap<string, string>): string {
  const name = (args[0] ?? '?').toLowerCase();
  if (name === 'cluster') return `cluster ${(args[1] ?? '').toLowerCase()}`;
  if (name === 'evalsha')
    return `evalsha ${scriptNames.get((args[1] ?? '').toLowerCase()) ?? '(another script)'}`;
  return name;
}
