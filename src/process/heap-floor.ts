/**
 * A floor under V8's old-generation limit for the serving processes. With the few MiB a worker keeps alive, V8 sets
 * that limit so low that the room left under it is smaller than the young generation, and it then starts a full
 * marking every few dozen milliseconds under load (186 mark-compacts in three CI storms, against 7 with the floor):
 * HEAD +13 %, one-PUT push +19 %, CI storm +11 % in paired rounds (bench/ab.mjs), peak RSS unchanged. V8 reads
 * it only when a process starts, so the primary hands it to the workers it forks; a single process gets it from
 * its command line (the systemd unit and the Docker image give it).
 */
export const HEAP_FLOOR_FLAG = '--initial-old-space-size=64';

/** `execArgv` with the floor added, unless the operator already chose one (on the command line or NODE_OPTIONS). */
export function withHeapFloor(execArgv: readonly string[], nodeOptions = ''): string[] {
  const chosen = [...execArgv, ...nodeOptions.split(/\s+/)].some((a) => /^--initial[-_]old[-_]space[-_]size(=|$)/.test(a));
  return chosen ? [...execArgv] : [...execArgv, HEAP_FLOOR_FLAG];
}
