/**
 * Which SQL texts go to Postgres as named (server-side prepared) statements, and under which
 * name. Postgres then parses a statement once per connection and, after a few executions,
 * reuses a generic plan: about half of its CPU per create was parsing and planning the same
 * texts again (docs/performance.md).
 *
 * A text gets a name the second time it is seen, so one-off statements (an admin lookup, a
 * report with a rare mix of filters) stay unnamed, and at most `capacity` texts ever get one:
 * every pooled connection keeps one prepared statement per name it has run, in Postgres
 * memory, for the connection's life. Names are never reused for another text.
 *
 * reset() starts a new generation of names: after a migration changed a table under a
 * running process, every statement is prepared afresh under a new name rather than failing
 * once per pooled connection on its stale copy.
 */
export class PreparedNames {
  private readonly named = new Map<string, string>();
  private seenOnce = new Set<string>();
  private generation = 1;

  constructor(private readonly capacity: number) {}

  nameFor(sql: string): string | undefined {
    const name = this.named.get(sql);
    if (name !== undefined) return name;
    if (this.named.size >= this.capacity) return undefined;
    if (!this.seenOnce.has(sql)) {
      // Bounded: texts seen once are forgotten in bulk rather than kept forever.
      if (this.seenOnce.size >= 8 * this.capacity) this.seenOnce = new Set();
      this.seenOnce.add(sql);
      return undefined;
    }
    this.seenOnce.delete(sql);
    const assigned = `rq${this.generation}_${this.named.size + 1}`;
    this.named.set(sql, assigned);
    return assigned;
  }

  reset(): void {
    this.generation++;
    this.named.clear();
    this.seenOnce = new Set();
  }

  get size(): number {
    return this.named.size;
  }
}
