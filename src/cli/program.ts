import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { ConfigError, loadConfig } from '../config/load.js';
import { parseDuration } from '../config/units.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../observability/logger.js';
import { splitListen } from '../http/server.js';
import { insecureListenProblem } from '../config/exposure.js';
import { startSingle } from '../process/single.js';
import { startPrimary } from '../process/primary.js';
import { exitWith } from '../process/failure.js';
import { CliError, callAdmin, daemonRequest, runningDaemon } from './store-access.js';
import { Layout } from '../storage/layout.js';
import { formatReferenceReports, formatReport, formatStatus, formatVerify } from './format.js';

interface StoreFlags {
  config?: string;
  data?: string;
  json?: boolean;
}

// package.json sits beside dist/ in every install (Node needs its "type": "module" to run dist/ at all).
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('buildcached')
  .description('A registry cache daemon for BuildKit layer caches (OCI Distribution API)')
  .version(version, '-V, --version')
  .showHelpAfterError();

/** Every command finds its store the same way: --config/--data, then env, then the defaults. */
function storeCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .addOption(new Option('-c, --config <file>', 'YAML config file').env('BUILDCACHED_CONFIG'))
    .option('-d, --data <dir>', 'data directory (env BUILDCACHED_DATA)');
}

type ServeFlags = StoreFlags & { listen?: string; workers?: string; adminListen?: string };

const configFor = (opts: ServeFlags): Promise<Config> =>
  loadConfig({
    file: opts.config,
    overrides: { listen: opts.listen, workers: opts.workers, storage: { dir: opts.data }, admin: { listen: opts.adminListen } },
  });

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(`${json ? JSON.stringify(value, null, 2) : human}\n`);

storeCommand('serve', 'run the daemon')
  .option('-l, --listen <host:port>', 'address to listen on (env BUILDCACHED_LISTEN)')
  .option('-w, --workers <n>', 'HTTP worker processes sharing the port and the store: a number or "auto", one per core (env BUILDCACHED_WORKERS)')
  .option('--admin-listen <addr>', 'admin API: unix:/PATH or HOST:PORT; default the socket DATA/admin.sock (env BUILDCACHED_ADMIN_LISTEN)')
  .action(async (opts: ServeFlags) => {
    const config = await configFor(opts);
    const log = createLogger(config.log.level, 1, config.log.format);
    const insecure = insecureListenProblem(splitListen(config.listen).host, config.tls !== undefined, config.auth !== undefined, config.allowInsecure);
    if (insecure) throw new ConfigError(insecure);
    const running = config.workers > 1 ? await startPrimary(config, log, config.workers) : await startSingle(config, log);
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down: finishing in-flight requests');
      running.close().then(
        () => {
          log.info('stopped');
          process.exit(0);
        },
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      log.info({ signal: 'SIGHUP' }, config.tls ? 'reloading the TLS certificate' : 'SIGHUP: nothing to reload without tls');
      running.reloadTls();
    });
  });

storeCommand('status', 'show disk use, budget, references and evictions')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags) => {
    const status = await callAdmin(await configFor(opts), { method: 'GET', path: '/admin/v1/status', direct: (a) => a.status() });
    print(opts.json, status, formatStatus(status));
  });

storeCommand('du', 'list cache references by size (own and shared), with exports, imports, saved uploads and warnings')
  .alias('ls')
  .option('--repo <prefix>', 'only repositories under this prefix')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags & { repo?: string }) => {
    const q = opts.repo ? `?repo=${encodeURIComponent(opts.repo)}` : '';
    const { references } = await callAdmin(await configFor(opts), {
      method: 'GET',
      path: `/admin/v1/references${q}`,
      direct: async (a) => ({ references: await a.references(opts.repo) }),
    });
    print(opts.json, references, formatReferenceReports(references));
  });

storeCommand('gc', 'collect garbage and evict down to the low watermark now')
  .option('--dry-run', 'list what would be removed, remove nothing')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags & { dryRun?: boolean }) => {
    const report = await callAdmin(await configFor(opts), {
      method: 'POST',
      path: `/admin/v1/gc${opts.dryRun ? '?dryRun=1' : ''}`,
      direct: (a) => a.gc(!!opts.dryRun),
    });
    print(opts.json, report, formatReport(report));
  });

storeCommand('prune', 'remove cache references not used for a while')
  .requiredOption('--older-than <duration>', 'last use older than this (e.g. 7d, 12h)')
  .option('--repo <prefix>', 'only repositories under this prefix')
  .option('--dry-run', 'list what would be removed, remove nothing')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags & { olderThan: string; repo?: string; dryRun?: boolean }) => {
    const ms = parseDuration(opts.olderThan);
    if (ms === undefined) throw new ConfigError(`--older-than: "${opts.olderThan}" is not a duration with a unit (examples: 7d, 12h)`);
    const q = new URLSearchParams({ olderThan: opts.olderThan, ...(opts.repo ? { repo: opts.repo } : {}), ...(opts.dryRun ? { dryRun: '1' } : {}) });
    const report = await callAdmin(await configFor(opts), {
      method: 'POST',
      path: `/admin/v1/prune?${q}`,
      direct: (a) => a.prune(ms, opts.repo, !!opts.dryRun),
    });
    print(opts.json, report, formatReport(report));
  });

storeCommand('verify', 're-hash every blob, check every manifest and tag; exit 2 while problems remain')
  .option('--repair', 'remove broken tags and manifests, move corrupt blobs to DATA/quarantine/')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags & { repair?: boolean }) => {
    const report = await callAdmin(await configFor(opts), {
      method: 'POST',
      path: `/admin/v1/verify${opts.repair ? '?repair=1' : ''}`,
      direct: (a) => a.verify(!!opts.repair),
    });
    print(opts.json, report, formatVerify(report));
    // Like fsck: scripts (cron, CI) learn from the status whether the store is sound now.
    if (report.problems.some((p) => !p.repaired)) process.exitCode = 2;
  });

storeCommand('tier-retention', "apply the S3 bucket's own bound now: touch what is used here, expire what no daemon used for retentionDays")
  .option('--dry-run', 'count what would expire, remove and touch nothing')
  .option('--json', 'print JSON')
  .action(async (opts: StoreFlags & { dryRun?: boolean }) => {
    const r = await callAdmin(await configFor(opts), {
      method: 'POST',
      path: `/admin/v1/tier/retention${opts.dryRun ? '?dryRun=1' : ''}`,
      direct: (a) => a.tierRetention(!!opts.dryRun),
    });
    const verb = r.dryRun ? 'would expire' : 'expired';
    print(opts.json, r, `${verb} ${r.tags} tag(s), ${r.manifests} manifest(s), ${r.blobs} blob(s) (${r.bytes} bytes); touched ${r.touched}; uploaded again ${r.reuploaded}; dropped here ${r.droppedLocally}; ${r.ms} ms`);
  });

storeCommand('health', 'exit 0 when the daemon on this data directory answers GET /healthz (for Docker HEALTHCHECK)')
  .action(async (opts: StoreFlags) => {
    const layout = new Layout(resolve((await configFor(opts)).storage.dir));
    const owner = await runningDaemon(layout);
    if (!owner?.url) throw new CliError(`no daemon runs on ${layout.root}`);
    await daemonRequest(owner, owner.url, 'GET', '/healthz');
    process.stdout.write('ok\n');
  });

program.parseAsync().catch((e: unknown) => exitWith(e, [ConfigError, CliError]));
