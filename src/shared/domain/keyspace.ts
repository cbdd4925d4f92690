/**
 * The numbered databases of a node, as INFO keyspace reports them. Valkey 9 clusters may hold more
 * than database 0 (`cluster-databases` above 1); Redis Cluster and Valkey 8 have database 0 only.
 * Pure: parsing the section and the one question asked of it.
 */

/** One `dbN:keys=...,expires=...,avg_ttl=...` line. */
export interface KeyspaceDatabase {
  readonly database: number;
  readonly keys: number;
  readonly expires: number;
}

/**
 * The databases INFO keyspace lists (a database without keys is not listed). Other lines (the
 * `# Keyspace` header, other sections) and unknown fields are ignored; a `dbN:` line without a
 * whole keys count throws, naming it.
 */
export function parseKeyspace(info: string): KeyspaceDatabase[] {
  const databases: KeyspaceDatabase[] = [];
  for (const line of info.split(/\r?\n/)) {
    const match = /^db(\d+):(.*)$/.exec(line.trim());
    if (match === null) continue;
    const fields = new Map(
      match[2]!.split(',').map((pair) => {
        const [name = '', value = ''] = pair.split('=');
        return [name.trim(), value.trim()] as const;
      }),
    );
    const keys = Number(fields.get('keys'));
    if (!Number.isInteger(keys) || keys < 0)
      throw new Error(`INFO keyspace: no keys count in "${line.trim()}"`);
    const expires = Number(fields.get('expires') ?? 0);
    databases.push({ database: Number(match[1]), keys, expires: Number.isInteger(expires) ? expires : 0 });
  }
  return databases.sort((a, b) => a.database - b.database);
}

/** The databases other than 0 that hold keys: what the keys engine (database 0 only) would leave behind. */
export function databasesBeyondZero(databases: readonly KeyspaceDatabase[]): KeyspaceDatabase[] {
  return databases.filter((entry) => entry.database !== 0 && entry.keys > 0);
}
