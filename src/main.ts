#!/usr/bin/env node
import { Command, Option } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { createLogger } from './observability/logger.js';
import { ListenError, startServer } from './server.js';
import { DataDirError } from './storage/data-dir.js';

const program = new Command()
  .name('buildcached')
  .description('A registry cache daemon for BuildKit layer caches (OCI Distribution API)')
  .showHelpAfterError();

program
  .command('serve')
  .description('run the daemon')
  .addOption(new Option('-c, --config <file>', 'YAML config file').env('BUILDCACHED_CONFIG'))
  .option('-l, --listen <host:port>', 'address to listen on (env BUILDCACHED_LISTEN)')
  .option('-d, --data <dir>', 'data directory (env BUILDCACHED_DATA)')
  .action(async (opts: { config?: string; listen?: string; data?: string }) => {
    const config = await loadConfig({
      file: opts.config,
      overrides: { listen: opts.listen, storage: { dir: opts.data } },
    });
    const log = createLogger(config.log.level);
    const running = await startServer(config, log);
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
  });

program.parseAsync().catch((e: unknown) => {
  // Expected failures get one clear line; anything else keeps its stack.
  const known = e instanceof ConfigError || e instanceof DataDirError || e instanceof ListenError;
  process.stderr.write(`buildcached: ${known ? (e as Error).message : (e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
