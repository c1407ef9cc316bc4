import { readFile } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { createLogger } from '../observability/logger.js';
import { exitWith } from './failure.js';
import { WORKER_CONFIG_ENV } from './messages.js';
import { runWorker } from './worker.js';

// The primary validated this configuration and wrote it, whole, where this variable says (see startPrimary).
const file = process.env[WORKER_CONFIG_ENV];
if (!file) exitWith(new Error(`a worker needs ${WORKER_CONFIG_ENV} from its primary`));
const config = JSON.parse(await readFile(file, 'utf8').catch((e: unknown) => exitWith(e))) as Config;
runWorker(config, createLogger(config.log.level, 1, config.log.format)).catch((e: unknown) => exitWith(e));
