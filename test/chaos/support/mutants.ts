import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, serviceEntry } from './service.js';

/**
 * A deliberately broken copy of the built service, to show a scenario can fail: the build
 * (the directory two levels above serviceEntry(), e.g. dist/) is copied to
 * .chaos-mutants/<name>/ inside the repository, so its imports still find node_modules, and
 * each mutation replaces text in one compiled file. Throws when a pattern is not
 * found, so a refactor cannot silently turn the mutant into the real thing.
 * Returns the mutant's entry point, for CHAOS_SERVICE_ENTRY.
 */
export function mutantEntry(name: string, mutations: Array<{ file: string; from: string; to: string }>): string {
  const entry = serviceEntry();
  const buildRoot = path.resolve(path.dirname(entry), '..');
  const target = path.join(REPO_ROOT, '.chaos-mutants', name);
  fs.rmSync(target, { recursive: true, force: true });
  fs.cpSync(buildRoot, target, { recursive: true });
  for (const { file, from, to } of mutations) {
    const mutated = path.join(target, file);
    const text = fs.readFileSync(mutated, 'utf8');
    if (!text.includes(from)) throw new Error(`mutant ${name}: "${from}" not found in ${file}`);
    fs.writeFileSync(mutated, text.split(from).join(to));
  }
  return path.join(target, path.relative(buildRoot, entry));
}
